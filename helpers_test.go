package main

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/internal/testlog"
	"github.com/regmirror/regmirror/internal/testpull"
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
	return testpull.Ref(t, m.host, s)
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

// totalBlobGETs sums upstream blob GETs over everything the mirror cached.
func totalBlobGETs(t testing.TB, up *testupstream.Server, m *mirror) int {
	return testpull.TotalBlobGETs(t, up, m.cfg.DataDir)
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

// The client side of a pull and the data-dir checks are internal/testpull's.
var (
	readImage       = testpull.Image
	get             = testpull.Send
	blobFiles       = testpull.BlobFiles
	verifyBlobFiles = testpull.VerifyBlobFiles
	tmpFiles        = testpull.TmpFiles
	eventually      = testpull.Eventually
	startDownload   = testpull.StartDownload
)

// pullAll pulls an image or index through m, verifying every byte; it
// returns the top-level digest.
func pullAll(t testing.TB, m *mirror, s string) digest.Digest {
	t.Helper()
	return testpull.All(t, m.ref(t, s))
}
