package proxy

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/internal/testclock"
	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/upstream"
)

// countingStore is the real cache counting the reads the proxy asks of it.
type countingStore struct {
	*cache.Store
	readAlls, opens, stats, tags, touches atomic.Int64
	setTagHold                            *setTagHold // nil: SetTag goes straight through
}

func (c *countingStore) SetTag(registry, repo, tag string, rec cache.TagRecord) error {
	if h := c.setTagHold; h != nil {
		h.arrivedOnce.Do(func() { close(h.arrived) })
		<-h.released
	}
	return c.Store.SetTag(registry, repo, tag, rec)
}

// setTagHold holds every SetTag until release.
type setTagHold struct {
	arrived, released         chan struct{}
	arrivedOnce, releasedOnce sync.Once
}

// holdSetTags holds the store's SetTag calls from now on.
func (c *countingStore) holdSetTags() *setTagHold {
	h := &setTagHold{arrived: make(chan struct{}), released: make(chan struct{})}
	c.setTagHold = h
	return h
}

// wait waits until a SetTag is held.
func (h *setTagHold) wait(t *testing.T) {
	t.Helper()
	select {
	case <-h.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("no SetTag came in 10 s")
	}
}

// release lets the held SetTag calls, and any later, go.
func (h *setTagHold) release() { h.releasedOnce.Do(func() { close(h.released) }) }

func (c *countingStore) Touch(d digest.Digest) {
	c.touches.Add(1)
	c.Store.Touch(d)
}

func (c *countingStore) Tag(registry, repo, tag string) (cache.TagRecord, error) {
	c.tags.Add(1)
	return c.Store.Tag(registry, repo, tag)
}

func (c *countingStore) ReadAll(d digest.Digest, max int64) ([]byte, cache.BlobInfo, error) {
	c.readAlls.Add(1)
	return c.Store.ReadAll(d, max)
}

func (c *countingStore) Open(d digest.Digest) (*os.File, cache.BlobInfo, error) {
	c.opens.Add(1)
	return c.Store.Open(d)
}

func (c *countingStore) Stat(d digest.Digest) (cache.BlobInfo, error) {
	c.stats.Add(1)
	return c.Store.Stat(d)
}

// hotMirror is a Server over a real cache and testupstream, on loopback.
type hotMirror struct {
	*Server
	url   string
	store *countingStore
	up    *testupstream.Server
	clock *testclock.Clock
}

func startHotMirror(t *testing.T, mutate ...func(*Options)) *hotMirror {
	t.Helper()
	up := testupstream.Start(t)
	reg, err := upstream.New(upstream.Options{Name: "docker.io", URL: up.URL()})
	if err != nil {
		t.Fatal(err)
	}
	st, err := cache.Open(cache.Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Store: st}
	clock := testclock.At(time.Now())
	o := Options{Registries: []Upstream{reg}, Store: store, Now: clock.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, m := range mutate {
		m(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Connections the client dialed but never used would hold
		// fasthttp's Shutdown for seconds.
		http.DefaultClient.CloseIdleConnections()
		s.Shutdown(ctx)
		ln.Close()
		<-done
		st.Close()
	})
	return &hotMirror{Server: s, url: "http://" + ln.Addr().String(), store: store, up: up, clock: clock}
}

// ask sends method to path and returns the status, the cache header and
// the body's digest.
func (m *hotMirror) ask(t *testing.T, method, path string) (int, string, digest.Digest) {
	t.Helper()
	code, how, got, err := m.fetch(method, path)
	if err != nil {
		t.Fatal(err)
	}
	return code, how, got
}

// fetch is ask for a goroutine of the test's: it returns the error.
func (m *hotMirror) fetch(method, path string) (int, string, digest.Digest, error) {
	req, _ := http.NewRequest(method, m.url+path, nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", "", err
	}
	return resp.StatusCode, resp.Header.Get(CacheHeader), digest.FromBytes(body), nil
}

// TestHotHitsReadNothing: once a manifest was served and a blob's HEAD
// answered, further manifest GETs and blob HEADs are answered from memory,
// with no index read or file open, and still count as accesses.
func TestHotHitsReadNothing(t *testing.T) {
	m := startHotMirror(t)
	img := m.up.PushRandomImage(t, "library/hot", "latest", 1, 1024)
	md := testupstream.Digest(t, img)
	layer := testupstream.LayerDigests(t, img)[0]
	mpath, bpath := "/v2/library/hot/manifests/"+md.String(), "/v2/library/hot/blobs/"+layer.String()
	if code, how, got := m.ask(t, http.MethodGet, mpath); code != 200 || how != "miss" || got != md {
		t.Fatalf("first manifest GET: %d %s %s", code, how, got)
	}
	if code, _, _ := m.ask(t, http.MethodGet, bpath); code != 200 {
		t.Fatalf("blob GET: %d", code)
	}
	if code, how, _ := m.ask(t, http.MethodHead, bpath); code != 200 || how != "hit" {
		t.Fatalf("first blob HEAD: %d %s", code, how)
	}
	reads, opens, stats, touches := m.store.readAlls.Load(), m.store.opens.Load(), m.store.stats.Load(), m.store.touches.Load()
	for range 20 {
		if code, how, got := m.ask(t, http.MethodGet, mpath); code != 200 || how != "hit" || got != md {
			t.Fatalf("manifest GET: %d %s %s", code, how, got)
		}
		if code, how, _ := m.ask(t, http.MethodHead, bpath); code != 200 || how != "hit" {
			t.Fatalf("blob HEAD: %d %s", code, how)
		}
	}
	if r, o, s := m.store.readAlls.Load()-reads, m.store.opens.Load()-opens, m.store.stats.Load()-stats; r+o+s != 0 {
		t.Errorf("20 hot manifest GETs and blob HEADs read the store: %d ReadAll, %d Open, %d Stat; want none", r, o, s)
	}
	info, err := m.store.Store.Stat(md)
	if err != nil || info.LastAccess.IsZero() {
		t.Errorf("the hot manifest's access was not recorded: %v %v", info.LastAccess, err)
	}
	// Each hot entry passes its hits on to the cache's access record (for
	// eviction's order), at most once a second: the first at once.
	if n := m.store.touches.Load() - touches; n < 2 || n > 10 {
		t.Errorf("40 hot hits on 2 blobs recorded %d accesses in the cache; want each blob's, rate-limited (2 to 10)", n)
	}
}

// evictAndAsk removes the manifest and the layer from the cache with
// remove, then asks for both with upstream down: neither may come from
// memory.
func evictAndAsk(t *testing.T, remove func(m *hotMirror, manifest, layer digest.Digest)) {
	m := startHotMirror(t)
	img := m.up.PushRandomImage(t, "library/hot", "1", 1, 1024)
	md := testupstream.Digest(t, img)
	layer := testupstream.LayerDigests(t, img)[0]
	mpath, bpath := "/v2/library/hot/manifests/"+md.String(), "/v2/library/hot/blobs/"+layer.String()
	m.ask(t, http.MethodGet, "/v2/library/hot/manifests/1")
	m.ask(t, http.MethodGet, bpath)
	for range 2 { // the second answer is from memory
		if code, how, _ := m.ask(t, http.MethodGet, mpath); code != 200 || how != "hit" {
			t.Fatalf("manifest GET before: %d %s", code, how)
		}
		if code, how, _ := m.ask(t, http.MethodHead, bpath); code != 200 || how != "hit" {
			t.Fatalf("blob HEAD before: %d %s", code, how)
		}
	}
	remove(m, md, layer)
	m.up.SetDown(true)
	if code, how, _ := m.ask(t, http.MethodGet, mpath); code == 200 {
		t.Errorf("a removed manifest was served (%s) with upstream down", how)
	}
	if code, how, _ := m.ask(t, http.MethodHead, bpath); code == 200 {
		t.Errorf("a removed blob's HEAD was answered 200 (%s) with upstream down", how)
	}
	m.up.SetDown(false)
	gets := m.up.ManifestRequests(http.MethodGet)
	if code, how, got := m.ask(t, http.MethodGet, mpath); code != 200 || how != "miss" || got != md {
		t.Errorf("manifest after removal, upstream back: %d %s %s; want a miss", code, how, got)
	}
	if n := m.up.ManifestRequests(http.MethodGet) - gets; n != 1 {
		t.Errorf("upstream manifest GETs = %d, want 1", n)
	}
}

// TestHotCacheForgetsEvicted: a blob eviction deletes (cache.Store.Delete)
// is not answered from the hot cache afterwards.
func TestHotCacheForgetsEvicted(t *testing.T) {
	evictAndAsk(t, func(m *hotMirror, manifest, layer digest.Digest) {
		for _, d := range []digest.Digest{manifest, layer} {
			if err := m.store.Delete(d); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestHotCacheForgetsPurged: an image purged through the management API
// is not answered from the hot cache afterwards.
func TestHotCacheForgetsPurged(t *testing.T) {
	evictAndAsk(t, func(m *hotMirror, manifest, layer digest.Digest) {
		ops := &admin.Local{Store: m.store.Store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		res, err := ops.Purge(context.Background(), admin.PurgeRequest{Ref: "library/hot:1"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Blobs < 2 {
			t.Fatalf("purge removed %d blobs, want the manifest, config and layer", res.Blobs)
		}
	})
}

// TestHotCacheSeesTagChange: a tag that moved upstream is answered with
// its new manifest once it is revalidated, though the old one is hot.
func TestHotCacheSeesTagChange(t *testing.T) {
	m := startHotMirror(t, func(o *Options) { o.TagTTL = time.Minute })
	first := testupstream.Digest(t, m.up.PushRandomImage(t, "library/moving", "latest", 1, 256))
	for range 2 {
		if code, _, got := m.ask(t, http.MethodGet, "/v2/library/moving/manifests/latest"); code != 200 || got != first {
			t.Fatalf("tag before the move: %d %s, want %s", code, got, first)
		}
	}
	second := testupstream.Digest(t, m.up.PushRandomImage(t, "library/moving", "latest", 1, 256))
	m.clock.Advance(2 * time.Minute)
	if code, how, got := m.ask(t, http.MethodGet, "/v2/library/moving/manifests/latest"); code != 200 || got != second {
		t.Fatalf("tag after the move: %d %s %s, want %s", code, how, got, second)
	}
	if code, _, got := m.ask(t, http.MethodGet, "/v2/library/moving/manifests/latest"); code != 200 || got != second {
		t.Fatalf("tag after the move, again: %d %s, want %s", code, got, second)
	}
	if code, how, got := m.ask(t, http.MethodGet, "/v2/library/moving/manifests/"+first.String()); code != 200 || how != "hit" || got != first {
		t.Fatalf("the old manifest by digest: %d %s %s", code, how, got)
	}
}

// TestHotStoreRemovalDuringRead: what a read returned is not kept when a
// removal happened while it ran (it may be the removed blob); entries stay
// within the byte budget, oldest out first.
func TestHotStoreRemovalDuringRead(t *testing.T) {
	h := &hotStore{maxBytes: 10 * (hotEntryOverhead + 100), entries: map[digest.Digest]*list.Element{}}
	d := digest.FromString("a")
	gen := h.generation()
	h.removed(d) // the Store removed d while the read ran
	h.put(gen, cache.BlobInfo{Digest: d, Size: 1}, []byte("a"))
	if _, _, ok := h.get(d, false); ok {
		t.Fatal("an entry read before a removal was kept")
	}
	var ds []digest.Digest
	for i := range 30 {
		di := digest.FromString(fmt.Sprint(i))
		ds = append(ds, di)
		h.put(h.generation(), cache.BlobInfo{Digest: di, Size: 100}, make([]byte, 100))
		h.get(ds[0], false) // the first stays in use
	}
	if h.bytes > h.maxBytes || len(h.entries) != 10 {
		t.Fatalf("%d bytes in %d entries, budget %d", h.bytes, len(h.entries), h.maxBytes)
	}
	if _, _, ok := h.get(ds[0], false); !ok {
		t.Error("the entry in use was dropped")
	}
	if _, _, ok := h.get(ds[1], false); ok {
		t.Error("the oldest unused entry was kept")
	}
}

// A warm blob GET puts the blob's information again on every request (the
// Store's Open hands it back): for an entry already there that allocates
// nothing, with or without its body.
func TestHotStorePutOfAKnownEntryAllocatesNothing(t *testing.T) {
	h := &hotStore{maxBytes: 10 * (hotEntryOverhead + 100), entries: map[digest.Digest]*list.Element{}}
	info := cache.BlobInfo{Digest: digest.FromString("a"), Size: 1}
	h.put(h.generation(), info, nil)
	if n := testing.AllocsPerRun(100, func() { h.put(h.generation(), info, nil) }); n != 0 {
		t.Errorf("put of a known entry: %.0f allocations", n)
	}
	if _, _, ok := h.get(info.Digest, false); !ok {
		t.Fatal("the entry is gone")
	}
}

// A hit, and a warm blob GET's put of what the entry already holds, take
// no lock: both are answered while a put or a removal holds the store's
// mutex (on two cores, a lock per hit was a seventh of a warm request's
// time).
func TestHotHitTakesNoLock(t *testing.T) {
	h := &hotStore{maxBytes: 10 * (hotEntryOverhead + 100), entries: map[digest.Digest]*list.Element{}}
	info := cache.BlobInfo{Digest: digest.FromString("a"), Size: 1}
	h.put(h.generation(), info, []byte("a"))
	h.mu.Lock()
	defer h.mu.Unlock()
	answeredWithoutLock(t, "a hit", func() error {
		h.put(h.generation(), info, nil) // a warm blob GET, after its Store read
		if _, body, ok := h.get(info.Digest, true); !ok || string(body) != "a" {
			return errors.New("the hit missed")
		}
		return nil
	})
}

// CLOCK never makes an entry the victim of the put that brings it: a new
// entry stays when every other entry is in use, and so does a body that
// joins an entry's metadata at the back of the ring.
func TestHotStoreKeepsWhatItJustPut(t *testing.T) {
	const n = 10
	h := &hotStore{maxBytes: n * (hotEntryOverhead + 100), entries: map[digest.Digest]*list.Element{}}
	var ds []digest.Digest
	for i := range n {
		d := digest.FromString(fmt.Sprint(i))
		ds = append(ds, d)
		h.put(h.generation(), cache.BlobInfo{Digest: d, Size: 100}, make([]byte, 100))
	}
	for _, d := range ds {
		h.get(d, false) // every entry in use
	}
	fresh := digest.FromString("fresh")
	h.put(h.generation(), cache.BlobInfo{Digest: fresh, Size: 100}, make([]byte, 100))
	if _, _, ok := h.get(fresh, false); !ok {
		t.Fatal("a new entry was dropped by its own put")
	}
	if h.bytes > h.maxBytes {
		t.Fatalf("%d bytes, budget %d", h.bytes, h.maxBytes)
	}

	// Metadata only at the back of a ring its body overfills, hit (as
	// ReadAll's read does), then its body: the body stays.
	h = &hotStore{maxBytes: n*(hotEntryOverhead+100) - 1, entries: map[digest.Digest]*list.Element{}}
	meta := digest.FromString("meta")
	h.put(h.generation(), cache.BlobInfo{Digest: meta, Size: 100}, nil)
	for i := range n - 1 {
		d := digest.FromString(fmt.Sprint(i))
		h.put(h.generation(), cache.BlobInfo{Digest: d, Size: 100}, make([]byte, 100))
		h.get(d, false)
	}
	h.get(meta, false)
	h.put(h.generation(), cache.BlobInfo{Digest: meta, Size: 100}, make([]byte, 100))
	if _, body, ok := h.get(meta, false); !ok || body == nil {
		t.Fatal("a body that joined its metadata was dropped at once")
	}
	if h.bytes > h.maxBytes {
		t.Fatalf("%d bytes, budget %d", h.bytes, h.maxBytes)
	}
}

// Puts that must evict finish, and keep the budget, while other goroutines
// hit every entry without pause (hits set reference bits behind the hand,
// so the hand's sparing is bounded per pass, not by the bits).
func TestHotStoreEvictsUnderConstantHits(t *testing.T) {
	const n = 16
	h := &hotStore{maxBytes: n * (hotEntryOverhead + 100), entries: map[digest.Digest]*list.Element{}}
	var ds []digest.Digest
	for i := range 4 * n {
		ds = append(ds, digest.FromString(fmt.Sprint(i)))
	}
	stop := make(chan struct{})
	var hitters sync.WaitGroup
	for range 2 {
		hitters.Add(1)
		go func() {
			defer hitters.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, d := range ds {
					h.get(d, false)
				}
			}
		}()
	}
	for round := range 50 {
		for _, d := range ds {
			h.put(h.generation(), cache.BlobInfo{Digest: d, Size: 100}, make([]byte, 100))
		}
		h.mu.Lock()
		over, entries := h.bytes > h.maxBytes, len(h.entries)
		h.mu.Unlock()
		if over || entries > n {
			close(stop)
			t.Fatalf("round %d: %d entries, over budget %v", round, entries, over)
		}
	}
	close(stop)
	hitters.Wait()
}

// TestGenericManifestTypeCorrected: a manifest the cache recorded with
// the generic type (fetched through /blobs/ first, or re-indexed by an
// older release) is served by digest with its own media type, which the
// record then keeps, also when the hot cache already held its metadata.
// Before, it went out as application/octet-stream, which clients refuse.
func TestGenericManifestTypeCorrected(t *testing.T) {
	store := tempStore(t)
	const docker = "application/vnd.docker.distribution.manifest.v2+json"
	body := []byte(`{"schemaVersion":2,"mediaType":"` + docker + `","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"` +
		digest.FromString("c").String() + `","size":1},"layers":[]}`)
	d := digest.FromBytes(body)
	if _, err := store.Put(d, "application/octet-stream", body); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Registries: []Upstream{unreachable(t, "docker.io")}, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if r := serveOnce(s, "HEAD", "/v2/library/x/blobs/"+d.String(), "127.0.0.1"); r.StatusCode() != 200 {
		t.Fatalf("blob HEAD: %d", r.StatusCode())
	}
	for i := range 2 {
		r := serveOnce(s, "GET", "/v2/library/x/manifests/"+d.String(), "127.0.0.1", "Accept", docker)
		if r.StatusCode() != 200 || string(r.Header.ContentType()) != docker || !bytes.Equal(r.Body(), body) {
			t.Fatalf("GET %d: %d, Content-Type %q", i, r.StatusCode(), r.Header.ContentType())
		}
	}
	if info, err := store.Stat(d); err != nil || info.MediaType != docker {
		t.Errorf("the record says %q (%v), want %q", info.MediaType, err, docker)
	}

	// A manifest kept hot with the generic type, stored again with its
	// own: the hot entry takes the corrected type.
	other := append([]byte(nil), body...)
	other = append(other, ' ')
	od := digest.FromBytes(other)
	hot := newHotStore(store, 1<<20)
	if _, err := hot.Put(od, "application/octet-stream", other); err != nil {
		t.Fatal(err)
	}
	if _, err := hot.Put(od, docker, other); err != nil {
		t.Fatal(err)
	}
	if _, info, err := hot.ReadAll(od, 1<<20); err != nil || info.MediaType != docker {
		t.Errorf("the hot entry says %q (%v), want %q", info.MediaType, err, docker)
	}
	// Metadata a blob request read before the correction, put after it,
	// does not put the generic type back.
	hs := hot.(*hotStore)
	hs.put(hs.generation(), cache.BlobInfo{Digest: od, Size: int64(len(other)), MediaType: "application/octet-stream"}, nil)
	if _, info, err := hot.ReadAll(od, 1<<20); err != nil || info.MediaType != docker {
		t.Errorf("after a late metadata put the hot entry says %q (%v), want %q", info.MediaType, err, docker)
	}
}
