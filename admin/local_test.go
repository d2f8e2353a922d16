package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/eviction"
)

// fakeEvictor records pins as eviction would hold them.
type fakeEvictor struct {
	mu     sync.Mutex
	pinned map[string]bool
}

func (f *fakeEvictor) EvictNow(context.Context) (eviction.Result, error) {
	return eviction.Result{Blobs: 2, Bytes: 10}, nil
}

func (f *fakeEvictor) SetPinned(key string, pinned bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pinned[key] = pinned
}

func (f *fakeEvictor) Stats() eviction.Stats {
	return eviction.Stats{MaxBytes: 100, HighBytes: 95, LowBytes: 85}
}

func (f *fakeEvictor) is(d digest.Digest) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pinned[d.String()]
}

func newLocal(t *testing.T) (*Local, *cache.Store, *fakeEvictor) {
	t.Helper()
	s, err := cache.Open(cache.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ev := &fakeEvictor{pinned: map[string]bool{}}
	return &Local{Store: s, Evictor: ev, MaxBytes: 100}, s, ev
}

func put(t *testing.T, s *cache.Store, mediaType string, v any) (digest.Digest, int64) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(b)
	if _, err := s.Put(d, mediaType, b); err != nil {
		t.Fatal(err)
	}
	return d, int64(len(b))
}

type desc struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
}

const (
	ociIndex    = "application/vnd.oci.image.index.v1+json"
	ociManifest = "application/vnd.oci.image.manifest.v1+json"
	ociConfig   = "application/vnd.oci.image.config.v1+json"
	ociLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// image stores a manifest with its config and one layer; the layer is
// left out of the cache when layerCached is false.
func image(t *testing.T, s *cache.Store, seed string, layerCached bool) (desc, []digest.Digest) {
	cfg, cfgSize := put(t, s, ociConfig, map[string]string{"seed": seed})
	layer := []byte("layer " + seed)
	ld := digest.FromBytes(layer)
	if layerCached {
		if _, err := s.Put(ld, ociLayer, layer); err != nil {
			t.Fatal(err)
		}
	}
	m, size := put(t, s, ociManifest, map[string]any{
		"schemaVersion": 2, "mediaType": ociManifest,
		"config": desc{ociConfig, cfg, cfgSize},
		"layers": []desc{{ociLayer, ld, int64(len(layer))}},
	})
	return desc{ociManifest, m, size}, []digest.Digest{m, cfg, ld}
}

func TestPinRefAndUnpin(t *testing.T) {
	l, s, ev := newLocal(t)
	ctx := context.Background()
	a, aGraph := image(t, s, "a", true)
	b, bGraph := image(t, s, "b", false)                                   // a platform whose layer was never pulled
	missingChild := desc{ociManifest, digest.FromString("not cached"), 10} // a platform never pulled
	idx, _ := put(t, s, ociIndex, map[string]any{"schemaVersion": 2, "mediaType": ociIndex, "manifests": []desc{a, b, missingChild}})
	if err := s.SetTag("docker.io", "library/multi", "1", cache.TagRecord{Digest: idx, MediaType: ociIndex, CheckedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}

	if _, err := l.PinRef(ctx, "multi:2"); !errors.Is(err, ErrNotCached) {
		t.Fatalf("PinRef of an uncached tag: %v", err)
	}
	res, err := l.PinRef(ctx, "multi:1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Name != "docker.io/library/multi:1" || res.Digest != idx || res.Missing != 2 || res.Blobs != 6 {
		t.Fatalf("PinRef = %+v; want 6 cached blobs, 2 missing (b's layer, the uncached child)", res)
	}
	for _, d := range append(append([]digest.Digest{idx}, aGraph...), bGraph...) {
		if !ev.is(d) {
			t.Errorf("%s not pinned", d)
		}
	}

	// A second pin shares a's graph; unpinning the first keeps it.
	if err := l.Pin(ctx, "docker.io/library/a@"+a.Digest.String(), aGraph); err != nil {
		t.Fatal(err)
	}
	if err := l.Unpin(ctx, res.Name); err != nil {
		t.Fatal(err)
	}
	if ev.is(idx) || ev.is(bGraph[0]) {
		t.Error("unpinned digests stayed pinned")
	}
	for _, d := range aGraph {
		if !ev.is(d) {
			t.Errorf("%s, still listed by another pin, was unpinned", d)
		}
	}
	// Replacing a pin releases what it no longer lists.
	if err := l.Pin(ctx, "docker.io/library/a@"+a.Digest.String(), aGraph[:1]); err != nil {
		t.Fatal(err)
	}
	if ev.is(aGraph[1]) || !ev.is(aGraph[0]) {
		t.Error("replacing a pin did not release the digests it dropped")
	}
	if err := l.Unpin(ctx, "docker.io/library/nothing:1"); !errors.Is(err, ErrNoSuchPin) {
		t.Fatalf("Unpin of an unknown pin: %v", err)
	}
	pinned, err := PinnedDigests(s)
	if err != nil || len(pinned) != 1 || !pinned[aGraph[0]] {
		t.Fatalf("PinnedDigests = %v, %v", pinned, err)
	}
}

func TestOpsOverHTTP(t *testing.T) {
	l, s, _ := newLocal(t)
	ctx := context.Background()
	a, graph := image(t, s, "a", true)
	s.SetTag("ghcr.io", "org/app", "v1", cache.TagRecord{Digest: a.Digest, MediaType: ociManifest, CheckedAt: time.Now()})
	for _, d := range graph {
		s.AddLink("ghcr.io", "org/app", d)
	}
	srv := httptest.NewServer(Handler(l, "secret"))
	defer srv.Close()
	c := NewClient(srv.URL, "secret")
	if _, err := NewClient(srv.URL, "guess").Usage(ctx, 1); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("a wrong token: %v", err)
	}
	if _, err := NewClient(srv.URL, "").GC(ctx); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("no token: %v", err)
	}

	u, err := c.Usage(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if u.Blobs != 3 || u.MaxBytes != 100 || len(u.TopRepos) != 1 || u.TopRepos[0].Repo != "org/app" || u.TopRepos[0].Blobs != 3 {
		t.Fatalf("Usage = %+v", u)
	}
	if res, err := c.GC(ctx); err != nil || res.Blobs != 2 {
		t.Fatalf("GC = %+v, %v", res, err)
	}
	res, err := c.PinRef(ctx, "ghcr.io/org/app:v1")
	if err != nil || res.Blobs != 3 {
		t.Fatalf("PinRef = %+v, %v", res, err)
	}
	imgs, err := c.Images(ctx)
	if err != nil || len(imgs) != 1 || !imgs[0].Pinned || imgs[0].Ref != "ghcr.io/org/app:v1" {
		t.Fatalf("Images = %+v, %v", imgs, err)
	}
	if _, err := c.PinRef(ctx, "ghcr.io/org/app:v2"); !errors.Is(err, ErrNotCached) {
		t.Fatalf("PinRef of an uncached tag over HTTP: %v", err)
	}
	if _, err := c.PinRef(ctx, "Not A Ref"); !errors.Is(err, ErrInvalidRef) {
		t.Fatalf("PinRef of a bad reference over HTTP: %v", err)
	}
	if err := c.Unpin(ctx, "nothing"); !errors.Is(err, ErrNoSuchPin) {
		t.Fatalf("Unpin over HTTP: %v", err)
	}
	if _, err := NewClient("http://127.0.0.1:1", "secret").Usage(ctx, 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a server that is not there: %v", err)
	}
}

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	tok, err := WriteToken(dir)
	if err != nil || len(tok) != 64 {
		t.Fatalf("WriteToken = %q, %v", tok, err)
	}
	again, err := WriteToken(dir)
	if err != nil || again == tok {
		t.Fatalf("a second server start kept the token: %v", err)
	}
	if got, err := ReadToken(dir); err != nil || got != again {
		t.Fatalf("ReadToken = %q, %v", got, err)
	}
	if _, err := ReadToken(t.TempDir()); err == nil {
		t.Fatal("ReadToken of a dir without a token succeeded")
	}
}
