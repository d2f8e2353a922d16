package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/internal/testlog"
	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/upstream"
)

// The package's end-to-end harness: a Server on a real cache in a temp dir,
// in front of internal/testupstream registries, on a loopback port. It
// proves proxy behaviour without config, admin or eviction.

// testMirror is a Server answering on 127.0.0.1.
type testMirror struct {
	*Server
	store   *cache.Store
	dataDir string
	host    string // 127.0.0.1:port
	url     string
	stop    func()
}

// mirrorSetup is what startMirror builds a mirror from; mutators change it.
type mirrorSetup struct {
	Options
	// DataDir is the cache's directory (default: a new temp dir).
	DataDir string
	// Upstreams are the registries; the test upstream, as docker.io, first.
	Upstreams []upstream.Options
}

// startMirror runs a mirror with up as its docker.io.
func startMirror(t testing.TB, up *testupstream.Server, mutate ...func(*mirrorSetup)) *testMirror {
	t.Helper()
	st := &mirrorSetup{DataDir: t.TempDir()}
	if up != nil {
		st.Upstreams = append(st.Upstreams, upstream.Options{Name: "docker.io", URL: up.URL()})
	}
	for _, m := range mutate {
		m(st)
	}
	log := testlog.ForTest(t, "warn")
	for _, uo := range st.Upstreams {
		uo.Logger = log.With("registry", uo.Name)
		reg, err := upstream.New(uo)
		if err != nil {
			t.Fatalf("upstream %s: %v", uo.Name, err)
		}
		st.Registries = append(st.Registries, reg)
	}
	store, err := cache.Open(cache.Options{Dir: st.DataDir, Logger: log})
	if err != nil {
		t.Fatalf("cache: %v", err)
	}
	st.Store = store
	st.Logger = log
	if st.Metrics == nil {
		st.Metrics = prometheus.NewRegistry()
	}
	s, err := New(st.Options)
	if err != nil {
		store.Close()
		t.Fatalf("proxy: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	m := &testMirror{Server: s, store: store, dataDir: st.DataDir, host: ln.Addr().String()}
	m.url = "http://" + m.host
	var stopped bool
	m.stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx) // not t.Context(): it is cancelled before cleanups run
		ln.Close()      // in case Shutdown ran before Serve had the listener
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := store.Close(); err != nil {
			t.Errorf("closing the cache: %v", err)
		}
	}
	t.Cleanup(m.stop)
	return m
}

// ref names an image on the mirror the way the Docker daemon asks for it:
// bare /v2/<repo>/..., which means docker.io.
func (m *testMirror) ref(t testing.TB, s string) name.Reference {
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
func pullAll(t testing.TB, m *testMirror, s string) digest.Digest {
	t.Helper()
	desc, err := remote.Get(m.ref(t, s))
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

// send does a plain HTTP request against the mirror; header is name,
// value pairs.
func send(t testing.TB, method, url string, header ...string) (*http.Response, []byte) {
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

// totalBlobGETs sums upstream blob GETs over everything the mirror cached.
func totalBlobGETs(t testing.TB, up *testupstream.Server, m *testMirror) int {
	n := 0
	for hexName := range blobFiles(t, m.dataDir) {
		n += up.BlobGETs(digest.NewDigestFromEncoded(digest.SHA256, hexName))
	}
	return n
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
