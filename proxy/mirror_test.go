package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/internal/testlog"
	"github.com/regmirror/regmirror/internal/testpull"
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
	return testpull.Ref(t, m.host, s)
}

// totalBlobGETs sums upstream blob GETs over everything the mirror cached.
func totalBlobGETs(t testing.TB, up *testupstream.Server, m *testMirror) int {
	return testpull.TotalBlobGETs(t, up, m.dataDir)
}

// The client side of a pull and the data-dir checks are internal/testpull's.
var (
	send            = testpull.Send
	blobFiles       = testpull.BlobFiles
	verifyBlobFiles = testpull.VerifyBlobFiles
	tmpFiles        = testpull.TmpFiles
	eventually      = testpull.Eventually
	startDownload   = testpull.StartDownload
)

// pullAll pulls an image or index through m, verifying every byte; it
// returns the top-level digest.
func pullAll(t testing.TB, m *testMirror, s string) digest.Digest {
	t.Helper()
	return testpull.All(t, m.ref(t, s))
}

// tempStore is a cache in a temp dir, closed when the test ends.
func tempStore(t testing.TB) *cache.Store {
	t.Helper()
	store, err := cache.Open(cache.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// unreachable is registry name at an address nothing answers on: for
// tests that must not, or need not, reach an upstream.
func unreachable(t testing.TB, name string) *upstream.Registry {
	t.Helper()
	reg, err := upstream.New(upstream.Options{Name: name, URL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// serverInFrontOf is a Server (not serving on a port; its Handler
// answers) on a fresh cache, with the registry at url as docker.io.
func serverInFrontOf(t testing.TB, url string) (*Server, *cache.Store, *upstream.Registry) {
	t.Helper()
	reg, err := upstream.New(upstream.Options{Name: "docker.io", URL: url})
	if err != nil {
		t.Fatal(err)
	}
	store := tempStore(t)
	s, err := New(Options{Registries: []Upstream{reg}, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s, store, reg
}
