package realclient

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// testRegistry is a plain-HTTP go-containerregistry registry on 127.0.0.1
// standing in for the mirror. It records the requests it serves.
type testRegistry struct {
	Host string // 127.0.0.1:PORT
	URL  string // http://127.0.0.1:PORT

	mu   sync.Mutex
	reqs []string // "GET /v2/...?query"
}

func newTestRegistry(t testing.TB) *testRegistry {
	t.Helper()
	r := &testRegistry{}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.reqs = append(r.reqs, req.Method+" "+req.URL.RequestURI())
		r.mu.Unlock()
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// requests returns the recorded requests that contain substr.
func (r *testRegistry) requests(substr string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, q := range r.reqs {
		if strings.Contains(q, substr) {
			out = append(out, q)
		}
	}
	return out
}

func (r *testRegistry) ref(t testing.TB, repoTag string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// pushImage pushes a small random single-platform image to repoTag (e.g.
// "library/alpine:latest") and returns it.
func (r *testRegistry) pushImage(t testing.TB, repoTag string) v1.Image {
	t.Helper()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r.ref(t, repoTag), img); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	return img
}

// pushIndex pushes a small random image index (2 images) to repoTag.
func (r *testRegistry) pushIndex(t testing.TB, repoTag string) v1.ImageIndex {
	t.Helper()
	idx, err := random.Index(1024, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r.ref(t, repoTag), idx); err != nil {
		t.Fatalf("push index %s: %v", repoTag, err)
	}
	return idx
}

type digester interface{ Digest() (v1.Hash, error) }

func digestOf(t testing.TB, d digester) string {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}
