package proxy

import (
	"container/list"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/cache"
)

// DefaultHotCacheBytes is the default memory the hot cache may hold:
// manifest bodies plus about hotEntryOverhead per entry.
const DefaultHotCacheBytes = 32 << 20

// hotEntryOverhead is what one entry costs besides its body (the map slot,
// the index's node, the list element, the BlobInfo and its strings),
// rounded up.
const hotEntryOverhead = 448

// subscriber is the optional side of a Store that announces index changes
// (cache.Store.Subscribe). Without it the hot cache cannot learn of
// evictions and purges, so it stays off.
type subscriber interface {
	Subscribe(cache.Observer) (unsubscribe func())
}

// toucher is the optional side of a Store that records an access without
// reading anything (cache.Store.Touch): a hit answered from memory still
// counts for eviction's least-recently-used order.
type toucher interface {
	Touch(d digest.Digest)
}

// hotStore is the proxy's Store with a bounded in-memory cache in front of
// the hit path: the verified bodies of recently served manifests and the
// index information (size, media type) of recently served blobs, so that a
// warm manifest GET or blob HEAD does no index read, no file open and no
// re-hash. Content is immutable by digest, so the only way an entry goes
// stale is its blob leaving the cache: the Store announces every removal
// (eviction, purge, a damaged file dropped) through its observer list, and
// the entry goes with it. Tag records are not kept here: they change
// upstream and through the management API, and are read from the index on
// every request.
//
// A hit takes no lock, and once its entry is marked used it writes nothing
// shared but the access it passes on to the Store at most once a second:
// on two cores a mutex and a move to the front of a list on every hit were
// a seventh of a warm request's time. Eviction is therefore CLOCK, LRU's
// usual approximation: an entry used since the hand last passed it gets a
// second chance. A new entry is put in only after the hand has made room
// for it, so it is never its own put's victim.
type hotStore struct {
	Store
	touch func(digest.Digest) // nil when the Store cannot record accesses apart

	// index is what hits read (a sync.Map: a lookup of a key it holds
	// writes no shared memory); only a holder of mu changes it.
	index sync.Map // digest.Digest → *hotEntry

	mu       sync.Mutex
	entries  map[digest.Digest]*list.Element // of *hotEntry
	ring     list.List                       // front: most recently put or spared; back: the hand
	bytes    int64
	maxBytes int64
	// removals counts blobs removed since start (changed under mu, read
	// without it). A read from the Store that saw a removal happen
	// meanwhile does not fill an entry: what it read may be the removed
	// blob.
	removals atomic.Uint64
}

type hotEntry struct {
	info cache.BlobInfo
	body []byte // nil: metadata only (a blob, or a manifest not read yet)
	// used is CLOCK's reference bit: set by a hit or a put of what the
	// entry holds, cleared by the hand.
	used atomic.Bool
	// touched is when a hit on the entry was last passed on to the Store
	// (nanoseconds since hotClock; 0 for never).
	touched atomic.Int64
}

// holds reports whether e already has what a put of body would give it:
// a body is never replaced, nor added to by metadata only.
func (e *hotEntry) holds(body []byte) bool { return e.body != nil || body == nil }

// retyped reports whether a put of info with body corrects e's media type
// (a manifest recorded with the generic type, named by its content since).
// Only a put with the body does: metadata a blob request read before the
// correction must not put the generic type back.
func (e *hotEntry) retyped(info cache.BlobInfo, body []byte) bool {
	return body != nil && e.info.MediaType != info.MediaType
}

// markUsed sets e's reference bit, writing only if it is not set yet.
func (e *hotEntry) markUsed() {
	if !e.used.Load() {
		e.used.Store(true)
	}
}

// hotTouchEvery is how often hits on one entry are passed on to the Store
// as accesses: eviction's least-recently-used order needs to know that a
// blob is in use, not each of thousands of hits a second on it.
const hotTouchEvery = time.Second

// hotClock is where hotEntry.touched counts from: far enough back that an
// entry never touched is due from the start.
var hotClock = time.Now().Add(-hotTouchEvery)

func (e *hotEntry) cost() int64 { return hotEntryOverhead + int64(len(e.body)) }

// newHotStore wraps st; it returns st itself when maxBytes < 0 or when st
// does not announce removals.
func newHotStore(st Store, maxBytes int64) Store {
	sub, ok := st.(subscriber)
	if maxBytes < 0 || !ok {
		return st
	}
	if maxBytes == 0 {
		maxBytes = DefaultHotCacheBytes
	}
	h := &hotStore{Store: st, maxBytes: maxBytes, entries: make(map[digest.Digest]*list.Element)}
	if t, ok := st.(toucher); ok {
		h.touch = t.Touch
	}
	sub.Subscribe(hotObserver{h}) // for the Store's life: the Server does not outlive it
	return h
}

// get returns d's entry, marking it used. When hit is set, the use is a
// hit to pass on to the Store (at most once per hotTouchEvery).
func (h *hotStore) get(d digest.Digest, hit bool) (cache.BlobInfo, []byte, bool) {
	v, ok := h.index.Load(d)
	if !ok {
		return cache.BlobInfo{}, nil, false
	}
	e := v.(*hotEntry)
	e.markUsed()
	if hit && h.touch != nil {
		now := int64(time.Since(hotClock)) // the monotonic clock alone: half a time.Now
		if last := e.touched.Load(); now-last >= int64(hotTouchEvery) && e.touched.CompareAndSwap(last, now) {
			h.touch(d)
		}
	}
	return e.info, e.body, true
}

// generation is read before a Store read whose result may fill an entry.
func (h *hotStore) generation() uint64 { return h.removals.Load() }

// put remembers info (and body, if not nil) for d, unless a blob was
// removed since gen or the entry would take more than an eighth of the
// budget. A body is never replaced by metadata only.
func (h *hotStore) put(gen uint64, info cache.BlobInfo, body []byte) {
	// A warm blob GET lands here every time with what the entry holds
	// already: no lock, nothing to allocate. (An entry in the index is
	// current: a removal takes it out.)
	if v, ok := h.index.Load(info.Digest); ok {
		if old := v.(*hotEntry); old.holds(body) && !old.retyped(info, body) {
			old.markUsed()
			return
		}
	}
	if (&hotEntry{body: body}).cost() > h.maxBytes/8 { // does not escape: no allocation
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if gen != h.removals.Load() {
		return
	}
	if el, ok := h.entries[info.Digest]; ok {
		old := el.Value.(*hotEntry)
		old.markUsed()
		if old.holds(body) && !old.retyped(info, body) { // put there since the look above
			return
		}
		// The body joins metadata a hit has just read: in use, and at
		// the front, as far from the hand as a new entry.
		e := &hotEntry{info: info, body: body}
		e.used.Store(true)
		e.touched.Store(old.touched.Load())
		h.bytes += e.cost() - old.cost()
		el.Value = e
		h.ring.MoveToFront(el)
		h.index.Store(info.Digest, e)
		h.evict(0)
		return
	}
	e := &hotEntry{info: info, body: body}
	h.evict(e.cost())
	h.entries[info.Digest] = h.ring.PushFront(e)
	h.index.Store(info.Digest, e)
	h.bytes += e.cost()
}

// evict runs the hand until room more bytes fit: from the back, an entry
// used since the hand last passed is spared (its bit cleared, moved to the
// front), any other dropped. Hits may set bits again behind the hand, so
// it spares at most as many entries as there are; past that it drops
// whatever it finds. h.mu is held.
func (h *hotStore) evict(room int64) {
	for spared := 0; h.bytes+room > h.maxBytes && h.ring.Len() > 0; {
		last := h.ring.Back()
		if old := last.Value.(*hotEntry); spared < h.ring.Len() && old.used.Load() {
			spared++
			old.used.Store(false)
			h.ring.MoveToFront(last)
			continue
		}
		h.drop(last)
	}
}

// drop forgets el's entry. h.mu is held.
func (h *hotStore) drop(el *list.Element) {
	e := el.Value.(*hotEntry)
	h.ring.Remove(el)
	delete(h.entries, e.info.Digest)
	h.index.Delete(e.info.Digest)
	h.bytes -= e.cost()
}

// removed drops d: the Store no longer holds it.
func (h *hotStore) removed(d digest.Digest) {
	h.mu.Lock()
	h.removals.Add(1)
	if el, ok := h.entries[d]; ok {
		h.drop(el)
	}
	h.mu.Unlock()
}

// Stat answers from memory when it can.
func (h *hotStore) Stat(d digest.Digest) (cache.BlobInfo, error) {
	if info, _, ok := h.get(d, false); ok {
		return info, nil
	}
	gen := h.generation()
	info, err := h.Store.Stat(d)
	if err == nil {
		h.put(gen, info, nil)
	}
	return info, err
}

// Open opens the file as the Store does (a GET streams it) and remembers
// the blob's information for the HEADs that follow.
func (h *hotStore) Open(d digest.Digest) (*os.File, cache.BlobInfo, error) {
	gen := h.generation()
	f, info, err := h.Store.Open(d)
	if err == nil {
		h.put(gen, info, nil)
	}
	return f, info, err
}

// ReadAll answers a manifest from memory when it can; the body was checked
// against its digest when it was read or stored. Callers must not modify
// the body returned.
func (h *hotStore) ReadAll(d digest.Digest, max int64) ([]byte, cache.BlobInfo, error) {
	if info, body, ok := h.get(d, true); ok && body != nil {
		if info.Size > max {
			return nil, info, fmt.Errorf("%w: blob %s is %d bytes, limit %d", cache.ErrTooLarge, d, info.Size, max)
		}
		return body, info, nil
	}
	gen := h.generation()
	body, info, err := h.Store.ReadAll(d, max)
	if err == nil {
		h.put(gen, info, body)
	}
	return body, info, err
}

// Put stores a verified manifest and keeps it hot: it was just fetched
// because a client asked for it.
func (h *hotStore) Put(d digest.Digest, mediaType string, data []byte) (cache.BlobInfo, error) {
	return h.keep(d, mediaType, data, h.Store.Put)
}

// PutScoped is Put for a private registry's manifest (cache.Writer.Scope).
func (h *hotStore) PutScoped(d digest.Digest, mediaType string, data []byte) (cache.BlobInfo, error) {
	return h.keep(d, mediaType, data, h.Store.PutScoped)
}

// keep stores a verified manifest with put and keeps it hot.
func (h *hotStore) keep(d digest.Digest, mediaType string, data []byte, put func(digest.Digest, string, []byte) (cache.BlobInfo, error)) (cache.BlobInfo, error) {
	gen := h.generation()
	info, err := put(d, mediaType, data)
	if err == nil && info.Size == int64(len(data)) {
		h.put(gen, info, data)
	}
	return info, err
}

// headInfo is the information for a blob HEAD answered from memory: no
// index read, no file opened. ok is false when d is not hot.
func (h *hotStore) headInfo(d digest.Digest) (cache.BlobInfo, bool) {
	info, _, ok := h.get(d, true)
	return info, ok
}

// hotObserver hears the Store's index changes. Only removals matter:
// content never changes under a digest.
type hotObserver struct{ h *hotStore }

func (o hotObserver) BlobAdded(cache.BlobInfo)              {}
func (o hotObserver) BlobAccessed(digest.Digest, time.Time) {}
func (o hotObserver) BlobRemoved(d digest.Digest)           { o.h.removed(d) }

// serveHotHead answers a blob HEAD from the hot cache, if the blob is hot
// (and no private registry asks for links to be checked); ok reports
// whether it answered.
func (s *Server) serveHotHead(ctx *fasthttp.RequestCtx, ex *exchange, rq request) (r reply, ok bool, err error) {
	h, isHot := s.blobs.(*hotStore)
	if !isHot || !ctx.IsHead() || len(s.opts.PrivateRegistries) > 0 {
		return reply{}, false, nil // private registries confirm links on the ordinary path
	}
	info, hit := h.headInfo(rq.ref.digest)
	if !hit {
		return reply{}, false, nil
	}
	ex.outcome = OutcomeHit
	setBlobHeaders(ctx, info.Digest.String())
	rng, status, err := applyRange(ctx, info.Size)
	if err != nil {
		return reply{}, true, err
	}
	return headReply(status, int(rng.end-rng.start)), true, nil
}
