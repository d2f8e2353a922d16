package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/internal/tests3"
	"github.com/regmirror/regmirror/proxy"
	"github.com/regmirror/regmirror/s3tier"
	"github.com/regmirror/regmirror/upstream"
)

// TestS3ConfigSecret: the secret key comes from exactly one of
// secret_key, secret_key_env, secret_key_file.
func TestS3ConfigSecret(t *testing.T) {
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REGMIRROR_TEST_SECRET", "from-env")
	for _, tc := range []struct {
		c       s3Config
		want    string
		wantErr string
	}{
		{c: s3Config{SecretKey: "inline"}, want: "inline"},
		{c: s3Config{SecretKeyEnv: "REGMIRROR_TEST_SECRET"}, want: "from-env"},
		{c: s3Config{SecretKeyFile: file}, want: "from-file"},
		{c: s3Config{}, want: ""},
		{c: s3Config{SecretKeyEnv: "REGMIRROR_TEST_UNSET_SECRET"}, wantErr: "is not set"},
		{c: s3Config{SecretKey: "a", SecretKeyFile: file}, wantErr: "set one of"},
		{c: s3Config{SecretKeyFile: file + ".missing"}, wantErr: "secret_key_file"},
	} {
		got, err := tc.c.secret()
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%+v: %v, want an error with %q", tc.c, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v: %q %v, want %q", tc.c, got, err, tc.want)
		}
	}
}

func TestParseAge(t *testing.T) {
	for in, want := range map[string]time.Duration{"30d": 30 * 24 * time.Hour, "720h": 720 * time.Hour, "1d": 24 * time.Hour} {
		if got, err := parseAge(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"", "0d", "-1d", "d", "3x", "1.5d", "0s", "-5h"} {
		if _, err := parseAge(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// TestGCS3Command: `regmirror gc --s3 --older-than 30d` reads [s3] from the
// config and reports what it deleted; without [s3] it says so.
func TestGCS3Command(t *testing.T) {
	s := tests3.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "regmirror.toml")
	t.Setenv("REGMIRROR_TEST_S3_SECRET", tests3.SecretKey)
	conf := "[s3]\nendpoint = \"" + s.Endpoint + "\"\nbucket = \"gc-test\"\nprefix = \"p/\"\naccess_key = \"" + tests3.AccessKey + "\"\nsecret_key_env = \"REGMIRROR_TEST_S3_SECRET\"\npath_style = true\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	tcfg, err := loadWith(t, "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	o, err := tcfg.S3.options(tcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.Endpoint != s.Endpoint || o.SecretKey != tests3.SecretKey || !o.PathStyle || o.Prefix != "p/" {
		t.Fatalf("options from [s3]: %+v", o)
	}
	makeS3Bucket(t, o)
	var out, errOut bytes.Buffer
	if err := newCLI(&out, &errOut).Run([]string{"regmirror", "gc", "--config", cfg, "--data-dir", dir, "--s3", "--older-than", "30d"}); err != nil {
		t.Fatalf("gc --s3: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "deleted 0 objects") || !strings.Contains(out.String(), "s3://gc-test/p/") {
		t.Errorf("gc --s3 said: %s", out.String())
	}
	err = newCLI(&out, &errOut).Run([]string{"regmirror", "gc", "--data-dir", dir, "--s3", "--older-than", "30d"})
	if err == nil || !strings.Contains(err.Error(), "no [s3] section") {
		t.Errorf("gc --s3 without [s3]: %v", err)
	}
	err = newCLI(&out, &errOut).Run([]string{"regmirror", "gc", "--config", cfg, "--data-dir", dir, "--s3"})
	if err == nil || !strings.Contains(err.Error(), "--older-than") {
		t.Errorf("gc --s3 without --older-than: %v", err)
	}
}

func makeS3Bucket(t *testing.T, o s3tier.Options) {
	t.Helper()
	tier, err := s3tier.New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer tier.Close()
	if err := tier.EnsureBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// fakeUpstream is a registry with every optional capability the proxy
// looks for.
type fakeUpstream struct{ name string }

func (f fakeUpstream) Name() string               { return f.name }
func (f fakeUpstream) Repository(n string) string { return n }
func (f fakeUpstream) HeadManifest(context.Context, string, string) (upstream.Descriptor, error) {
	return upstream.Descriptor{}, upstream.ErrNotFound
}
func (f fakeUpstream) GetManifest(context.Context, string, string) ([]byte, upstream.Descriptor, error) {
	return nil, upstream.Descriptor{}, upstream.ErrNotFound
}
func (f fakeUpstream) HeadBlob(context.Context, string, digest.Digest) (int64, error) {
	return 0, upstream.ErrNotFound
}
func (f fakeUpstream) GetBlob(context.Context, string, digest.Digest, int64) (*upstream.Blob, error) {
	return nil, upstream.ErrNotFound
}
func (f fakeUpstream) ListTags(context.Context, string, string) (upstream.TagPage, error) {
	return upstream.TagPage{}, nil
}
func (f fakeUpstream) Referrers(context.Context, string, digest.Digest, string) ([]byte, upstream.Descriptor, error) {
	return []byte("referrers"), upstream.Descriptor{}, nil
}
func (f fakeUpstream) Stats() upstream.Stats           { return upstream.Stats{} }
func (f fakeUpstream) Sources() []upstream.SourceState { return []upstream.SourceState{{URL: "u"}} }

// TestComposeTiers: with [s3], every registry but a private one is read
// through L2, keeps its optional capabilities (referrers, stats, sources)
// and offers redirects; without [s3] the upstreams are served as they are.
func TestComposeTiers(t *testing.T) {
	st, err := cache.Open(cache.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	deps := tierDeps{store: st, hold: func(digest.Digest) func() { return func() {} }, log: slog.New(slog.DiscardHandler)}
	ups := []proxy.Upstream{fakeUpstream{"docker.io"}, fakeUpstream{"corp.example"}}
	cfg := defaultConfig()
	tr, err := composeTiers(cfg, deps, ups)
	if err != nil {
		t.Fatal(err)
	}
	if tr.ups[0] != ups[0] || tr.ups[1] != ups[1] {
		t.Error("without [s3] the upstreams are wrapped")
	}
	tr.close()
	cfg.S3 = &s3Config{Endpoint: "http://127.0.0.1:1", Bucket: "regmirror", SecretKey: "x"}
	cfg.Registries = append(cfg.Registries, registryConfig{Name: "corp.example", Private: true})
	tr, err = composeTiers(cfg, deps, ups)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	if tr.ups[1] != ups[1] {
		t.Error("a private registry is read through L2")
	}
	w := tr.ups[0]
	if _, ok := w.(proxy.BlobRedirector); !ok || w == ups[0] {
		t.Fatalf("docker.io is not wrapped: %T", w)
	}
	if r, ok := w.(interface {
		Referrers(context.Context, string, digest.Digest, string) ([]byte, upstream.Descriptor, error)
	}); !ok {
		t.Error("referrers lost")
	} else if body, _, err := r.Referrers(context.Background(), "r", digest.FromString("x"), ""); err != nil || string(body) != "referrers" {
		t.Errorf("referrers: %q %v", body, err)
	}
	if s, ok := w.(interface{ Sources() []upstream.SourceState }); !ok || len(s.Sources()) != 1 {
		t.Error("sources lost")
	}
	if _, ok := w.(interface{ Stats() upstream.Stats }); !ok {
		t.Error("stats lost")
	}
}
