package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/internal/testlog"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// mirror is a regmirror running in this process on a loopback port.
type mirror struct {
	app  *app
	cfg  config
	host string // 127.0.0.1:port
	url  string
	stop func()
}

// startMirror runs regmirror with the test upstream as its docker.io.
func startMirror(t testing.TB, up *testupstream.Server, mutate ...func(*config)) *mirror {
	t.Helper()
	cfg := defaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.LogLevel = "warn"
	if up != nil {
		cfg.registry(dockerHubName).URL = up.URL()
	}
	for _, m := range mutate {
		m(&cfg)
	}
	return startMirrorConfig(t, cfg)
}

func startMirrorConfig(t testing.TB, cfg config) *mirror {
	t.Helper()
	if err := cfg.finish(); err != nil {
		t.Fatalf("config: %v", err)
	}
	log := testlog.ForTest(t, cfg.LogLevel)
	a, err := newApp(cfg, log)
	if err != nil {
		t.Fatalf("newApp: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	// Until Run hands the listener over, the startup server answers 503.
	select {
	case <-a.serving:
	case err := <-done:
		t.Fatalf("mirror Run ended before serving: %v", err)
	}
	m := &mirror{app: a, cfg: cfg, host: a.Addr(), url: "http://" + a.Addr()}
	var stopped bool
	m.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mirror Run: %v", err)
		}
	}
	t.Cleanup(m.stop)
	return m
}

// ref names an image on the mirror the way the Docker daemon asks for it:
// bare /v2/<repo>/..., which means docker.io.
func (m *mirror) ref(t testing.TB, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(m.host+"/"+s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pullAll pulls an image or index through the mirror with
// go-containerregistry's client, reading and verifying every manifest,
// config and layer. It returns the top-level digest.
func pullAll(t testing.TB, m *mirror, s string) digest.Digest {
	t.Helper()
	ref := m.ref(t, s)
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatalf("pull %s: %v", s, err)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, child := range im.Manifests {
			img, err := idx.Image(child.Digest)
			if err != nil {
				t.Fatalf("child %s: %v", child.Digest, err)
			}
			readImage(t, img)
		}
	} else {
		img, err := desc.Image()
		if err != nil {
			t.Fatal(err)
		}
		readImage(t, img)
	}
	return digest.Digest(desc.Digest.String())
}

func readImage(t testing.TB, img v1.Image) {
	t.Helper()
	if _, err := img.RawConfigFile(); err != nil {
		t.Fatalf("config: %v", err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		want, _ := l.Digest()
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("layer %s: %v", want, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("layer %s: %v", want, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want.String() {
			t.Fatalf("layer digest %s, want %s", got, want)
		}
	}
}

// get does a plain HTTP request against the mirror.
func get(t testing.TB, method, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, body
}

// blobFiles lists the content files under the mirror's data dir.
func blobFiles(t testing.TB, dataDir string) map[string]bool {
	t.Helper()
	files := map[string]bool{}
	root := filepath.Join(dataDir, "blobs", "sha256")
	filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files[d.Name()] = true
		}
		return nil
	})
	return files
}

// verifyBlobFiles proves invariant 1: each file holds what its name says.
func verifyBlobFiles(t testing.TB, dataDir string) int {
	t.Helper()
	n := 0
	for hexName := range blobFiles(t, dataDir) {
		path := filepath.Join(dataDir, "blobs", "sha256", hexName[:2], hexName)
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // evicted since the listing
		}
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, f)
		f.Close()
		if got := hex.EncodeToString(h.Sum(nil)); got != hexName {
			t.Fatalf("blob file %s holds content %s", hexName, got)
		}
		n++
	}
	return n
}

func tmpFiles(t testing.TB, dataDir string) []string {
	entries, _ := os.ReadDir(filepath.Join(dataDir, "tmp"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// eventually polls cond until it holds; for outcomes that follow a
// request's end asynchronously (a fill's commit), never for ordering.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// adminClient manages m through its HTTP API, with the token it wrote.
func adminClient(t testing.TB, m *mirror) *admin.Client {
	t.Helper()
	token, err := admin.ReadToken(m.cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	return admin.NewClient(m.url, token)
}

// startDownload GETs url and reads its first n bytes, so the caller holds
// a download in progress; it returns the response and the bytes read.
func startDownload(t testing.TB, url string, n int) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, n)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		resp.Body.Close()
		t.Fatalf("reading the first %d bytes of %s: %v", n, url, err)
	}
	return resp, first
}

// totalBlobGETs sums upstream blob GETs over everything the mirror cached.
func totalBlobGETs(t testing.TB, up *testupstream.Server, m *mirror) int {
	n := 0
	for hexName := range blobFiles(t, m.cfg.DataDir) {
		n += up.BlobGETs(digest.NewDigestFromEncoded(digest.SHA256, hexName))
	}
	return n
}

type wireErrors struct {
	Errors []struct{ Code, Message, Detail string } `json:"errors"`
}

func wantWireError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d (%s)", resp.StatusCode, status, body)
	}
	var we wireErrors
	if err := json.Unmarshal(body, &we); err != nil || len(we.Errors) != 1 {
		t.Fatalf("body %q is not a registry error: %v", body, err)
	}
	if we.Errors[0].Code != code {
		t.Errorf("code %q, want %q (%s)", we.Errors[0].Code, code, body)
	}
}
