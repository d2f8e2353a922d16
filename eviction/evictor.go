package eviction

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
)

// Defaults applied by [New] to zero-valued [Options] fields.
const (
	DefaultHighWatermark = 0.95
	DefaultLowWatermark  = 0.85
	DefaultInterval      = 30 * time.Second
)

// ErrNoRoom is returned (wrapped) by [Evictor.EnsureFree] when the room asked
// for cannot be made: it is larger than the whole budget, or everything left
// is pinned, held or failing to delete. Retrying the write is then pointless.
var ErrNoRoom = errors.New("eviction: cannot make room")

// Deleter removes one blob from the cache: its file and its index record.
// It is called outside the Evictor's lock, one key at a time, never for a
// pinned key or a key held with [Evictor.Hold]. The Evictor forgets the key
// when Delete succeeds, so an [Evictor.Remove] the cache sends back for the
// same key is harmless.
type Deleter interface {
	Delete(key string) error
}

// DeleterFunc adapts a function to [Deleter].
type DeleterFunc func(key string) error

// Delete calls f(key).
func (f DeleterFunc) Delete(key string) error { return f(key) }

var _ Deleter = DeleterFunc(nil)

// Options configures an [Evictor]. Zero values take the documented defaults.
type Options struct {
	// MaxBytes is the byte budget of the cache. Required, > 0.
	MaxBytes int64
	// HighWatermark and LowWatermark are fractions of MaxBytes: when usage
	// exceeds High×MaxBytes a pass evicts down to Low×MaxBytes.
	// Defaults 0.95 and 0.85; 0 < Low < High ≤ 1.
	HighWatermark, LowWatermark float64
	// MinFree is the number of bytes to keep free on the cache filesystem,
	// whatever MaxBytes says. Needs FreeSpace. Default 0 (off).
	MinFree int64
	// FreeSpace reports the free bytes of the cache filesystem (statfs).
	// nil means MinFree is ignored and EnsureFree looks at MaxBytes only.
	FreeSpace func() (int64, error)
	// IsNotFound tells whether a Delete error means the blob is already gone,
	// in which case the entry is dropped instead of kept for a retry.
	// Default: errors.Is(err, fs.ErrNotExist).
	IsNotFound func(error) bool
	// Interval is how often Run wakes without a Kick. Default 30s.
	Interval time.Duration
	// Logger receives one line per pass that did something. Default
	// slog.Default().
	Logger *slog.Logger
}

// Entry describes one committed blob.
type Entry struct {
	Key  string
	Size int64
	// LastAccess orders the entry. Zero means "now" for Add and "oldest" for
	// Load.
	LastAccess time.Time
	// Pinned entries are never evicted. Add and Load only ever pin; unpin
	// with SetPinned. Pins outlive Remove (see SetPinned).
	Pinned bool
}

// Result reports one eviction pass.
type Result struct {
	Blobs     int   // blobs deleted
	Bytes     int64 // bytes deleted (recorded sizes)
	Remaining int64 // cache usage in bytes when the pass ended
	Failed    int   // Delete calls that failed and were kept for a retry
}

// Stats is a snapshot of the Evictor's counters, cheap enough to take on
// every metrics scrape (one short critical section, no allocation).
type Stats struct {
	Bytes       int64 // usage: sum of the sizes of known blobs, pinned included
	Blobs       int64 // known blobs
	PinnedBytes int64
	PinnedBlobs int64
	Held        int64 // keys currently held
	MaxBytes    int64
	HighBytes   int64 // high watermark in bytes
	LowBytes    int64 // low watermark in bytes
	MinFree     int64

	EvictedBlobs int64 // blobs deleted since New
	EvictedBytes int64
	Vanished     int64 // entries dropped because Delete said they were already gone
	DeleteErrors int64 // failed Delete calls (other than "not found")
	Passes       int64 // passes run (including passes with nothing to do)
	// Stuck is true when the last pass stopped short of its goal because
	// everything left was pinned, held or failing to delete: the cache may
	// stay over budget.
	Stuck bool
}

// Evictor keeps the cache within its budget. Create it with [New]; all
// methods are safe for concurrent use.
type Evictor struct {
	maxBytes, highBytes, lowBytes, minFree int64

	freeSpace  func() (int64, error)
	isNotFound func(error) bool
	interval   time.Duration
	log        *slog.Logger
	del        Deleter

	kick    chan struct{} // capacity 1: Kick coalesces
	passSem chan struct{} // capacity 1: one pass at a time
	onPass  func(Result)  // test hook, called at the end of every pass

	mu          sync.Mutex
	inflightEnd sync.Cond // on mu; broadcast when a Delete returns and Hold waits
	arena       arena     // the entries and their LRU list
	index       keyIndex  // key → slot
	holds       map[string]int
	inflight    map[string]struct{} // keys whose Delete is running
	pendingPins map[string]struct{} // SetPinned(key, true) before the key was added
	waiters     int                 // Hold calls waiting on inflightEnd

	bytes, blobs, pinnedBytes, pinnedBlobs int64

	evictedBlobs, evictedBytes, vanished, deleteErrors, passes int64

	stuck bool
}

// New returns an Evictor for opts that deletes through d. It validates opts
// and applies the defaults; start the loop with [Evictor.Run].
func New(opts Options, d Deleter) (*Evictor, error) {
	if d == nil {
		return nil, errors.New("eviction: nil Deleter")
	}
	if opts.MaxBytes <= 0 {
		return nil, fmt.Errorf("eviction: max bytes %d must be more than zero", opts.MaxBytes)
	}
	high, low := opts.HighWatermark, opts.LowWatermark
	if high == 0 {
		high = DefaultHighWatermark
	}
	if low == 0 {
		low = DefaultLowWatermark
	}
	if !(low > 0 && low < high && high <= 1) {
		return nil, fmt.Errorf("eviction: watermarks low %v, high %v: want 0 < low < high ≤ 1", low, high)
	}
	if opts.MinFree < 0 {
		return nil, fmt.Errorf("eviction: min free %d is negative", opts.MinFree)
	}
	if opts.Interval < 0 {
		return nil, fmt.Errorf("eviction: interval %v is negative", opts.Interval)
	}
	e := &Evictor{
		maxBytes:    opts.MaxBytes,
		highBytes:   int64(float64(opts.MaxBytes) * high),
		lowBytes:    int64(float64(opts.MaxBytes) * low),
		minFree:     opts.MinFree,
		freeSpace:   opts.FreeSpace,
		isNotFound:  opts.IsNotFound,
		interval:    opts.Interval,
		log:         opts.Logger,
		del:         d,
		kick:        make(chan struct{}, 1),
		passSem:     make(chan struct{}, 1),
		holds:       make(map[string]int),
		inflight:    make(map[string]struct{}),
		pendingPins: make(map[string]struct{}),
	}
	if e.isNotFound == nil {
		e.isNotFound = func(err error) bool { return errors.Is(err, fs.ErrNotExist) }
	}
	if e.interval == 0 {
		e.interval = DefaultInterval
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	e.arena.init()
	e.index.init()
	e.inflightEnd.L = &e.mu
	return e, nil
}

// nanos converts t for storage; the zero time becomes dflt.
func nanos(t time.Time, dflt int64) int64 {
	if t.IsZero() {
		return dflt
	}
	return t.UnixNano()
}

// count adds (sign 1) or removes (sign -1) x from the usage counters.
func (e *Evictor) count(x *entry, sign int64) {
	e.bytes += sign * x.size
	e.blobs += sign
	if x.is(flagPinned) {
		e.pinnedBytes += sign * x.size
		e.pinnedBlobs += sign
	}
}

// lookup returns key's slot, or 0. The caller holds mu.
func (e *Evictor) lookup(key string) slot { return e.index.lookup(&e.arena, key) }

// keyOf returns the text of the key of slot i. The caller holds mu.
func (e *Evictor) keyOf(i slot) string { return e.index.key(&e.arena, i) }

// Load bulk-loads the blobs found at startup. It sorts them by LastAccess
// once (the package's only sort) and places them behind any entry already
// added, which is more recent than anything read from the index. Keys already
// known keep their place; their size is updated and Pinned may pin them.
func (e *Evictor) Load(entries []Entry) {
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, func(a, b Entry) int {
		return b.LastAccess.Compare(a.LastAccess) // newest first
	})
	e.mu.Lock()
	e.arena.grow(len(sorted))
	e.index.reserve(&e.arena, len(sorted))
	for _, ent := range sorted {
		e.addLocked(ent, nanos(ent.LastAccess, 0), true)
	}
	over := e.bytes > e.highBytes
	e.mu.Unlock()
	if over {
		e.Kick()
	}
}

// Add records a committed blob as the most recently used. Adding a known key
// again is idempotent: it updates the size, pins it if ent.Pinned, and moves
// it to the most recently used end if ent.LastAccess is newer. Add kicks the
// run loop when it makes usage cross the high watermark. Empty keys are
// ignored; negative sizes count as zero.
func (e *Evictor) Add(ent Entry) {
	if ent.Key == "" {
		return
	}
	last := nanos(ent.LastAccess, time.Now().UnixNano())
	e.mu.Lock()
	before := e.bytes
	e.addLocked(ent, last, false)
	crossed := before <= e.highBytes && e.bytes > e.highBytes
	e.mu.Unlock()
	if crossed {
		e.Kick()
	}
}

func (e *Evictor) addLocked(ent Entry, last int64, atBack bool) {
	if ent.Key == "" {
		return
	}
	size := max(ent.Size, 0)
	i := e.lookup(ent.Key)
	if i != 0 && !e.arena.at(i).is(flagDeleting) {
		x := e.arena.at(i)
		if x.size != size {
			e.count(x, -1)
			x.size = size
			e.count(x, 1)
		}
		if ent.Pinned {
			e.setPinnedLocked(i, true)
		}
		if last > x.last {
			x.last = last
			if !atBack && x.linked() {
				e.arena.moveToFront(i)
			}
		}
		return
	}
	if i != 0 {
		// A key whose Delete is in flight (the caller should have held it):
		// the new entry replaces the doomed one, whose slot the pass frees.
		e.index.remove(&e.arena, i)
		e.arena.at(i).set(flagRemoved, true)
	}
	i = e.arena.alloc()
	e.index.insert(&e.arena, ent.Key, i)
	x := e.arena.at(i)
	x.size, x.last = size, last
	x.set(flagPinned, ent.Pinned)
	if _, ok := e.pendingPins[ent.Key]; ok {
		x.set(flagPinned, true)
		delete(e.pendingPins, ent.Key)
	}
	e.count(x, 1)
	if x.is(flagPinned) {
		return
	}
	if atBack {
		e.arena.pushBack(i)
	} else {
		e.arena.pushFront(i)
	}
}

// Touch records an access to key at time at: O(1), no allocation. The entry
// moves to the most recently used end unless at is not newer than its last
// access. Unknown keys are ignored.
func (e *Evictor) Touch(key string, at time.Time) {
	if at.IsZero() {
		return
	}
	t := at.UnixNano()
	e.mu.Lock()
	if i := e.lookup(key); i != 0 {
		if x := e.arena.at(i); t > x.last {
			x.last = t
			if x.linked() {
				e.arena.moveToFront(i)
			}
		}
	}
	e.mu.Unlock()
}

// Remove forgets key: the cache deleted it (or reconcile found it missing).
// A pin is on the key, not the blob: it survives Remove and applies again
// when the key is re-added. Unknown keys are ignored.
func (e *Evictor) Remove(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.removeLocked(key)
}

// RemoveUnless is Remove, unless back reports (asked under the evictor's
// lock, so no Add can slip between) that the key is committed again. The
// cache reports a removal after the fact: a delete that raced a new
// commit of the same blob (purge, the scrub) could otherwise forget the
// entry that commit added, leaving the blob on disk, uncounted and never
// evicted.
func (e *Evictor) RemoveUnless(key string, back func() bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	// Only a live entry can be a new commit's: an unknown key, or one this
	// evictor is deleting (its own pass's notice), needs no asking.
	if i := e.lookup(key); i != 0 && !e.arena.at(i).is(flagDeleting) && back() {
		return
	}
	e.removeLocked(key)
}

func (e *Evictor) removeLocked(key string) {
	i := e.lookup(key)
	if i == 0 {
		return
	}
	x := e.arena.at(i)
	e.index.remove(&e.arena, i)
	if x.is(flagPinned) {
		e.pendingPins[key] = struct{}{}
	}
	if x.is(flagDeleting) { // already uncounted; the pass frees the slot
		x.set(flagRemoved, true)
		return
	}
	e.count(x, -1)
	if x.linked() {
		e.arena.remove(i)
	}
	if x.is(flagParked) { // its pass frees the slot
		x.set(flagRemoved, true)
		return
	}
	e.arena.release(i)
}

// SetPinned pins or unpins key. Pinned blobs are never evicted. A pin is on
// the key: pinning a key not yet added (or removed since) is remembered and
// applies when it is added; only SetPinned(key, false) drops a pin. An unpinned
// blob rejoins the order by its last access (a walk from the least recently
// used end: unpinning is rare).
func (e *Evictor) SetPinned(key string, pinned bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i := e.lookup(key)
	if i == 0 {
		if pinned {
			e.pendingPins[key] = struct{}{}
		} else {
			delete(e.pendingPins, key)
		}
		return
	}
	e.setPinnedLocked(i, pinned)
}

func (e *Evictor) setPinnedLocked(i slot, pinned bool) {
	x := e.arena.at(i)
	if x.is(flagPinned) == pinned {
		return
	}
	if x.is(flagDeleting) { // uncounted; the pass settles it
		x.set(flagPinned, pinned)
		return
	}
	if pinned {
		e.pinnedBytes += x.size
		e.pinnedBlobs++
	} else {
		e.pinnedBytes -= x.size
		e.pinnedBlobs--
	}
	x.set(flagPinned, pinned)
	if x.is(flagParked) { // relinked (or not) when its pass ends
		return
	}
	if pinned {
		e.arena.remove(i)
	} else {
		e.arena.insertByAge(i)
	}
}

// Hold protects key from eviction until release is called; holds nest. The
// proxy holds a digest while a fill for it is in progress and while it
// commits, so the key may be unknown yet. If a Delete of key is in flight,
// Hold waits for it to return: once Hold returns, no Delete of key runs
// until release. release is idempotent.
func (e *Evictor) Hold(key string) (release func()) {
	e.mu.Lock()
	for {
		if _, ok := e.inflight[key]; !ok {
			break
		}
		e.waiters++
		e.inflightEnd.Wait()
		e.waiters--
	}
	e.holds[key]++
	e.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			e.mu.Lock()
			if n := e.holds[key] - 1; n > 0 {
				e.holds[key] = n
			} else {
				delete(e.holds, key)
			}
			e.mu.Unlock()
		})
	}
}

// Kick asks Run for a pass soon. It never blocks, and kicks that arrive while
// one is pending coalesce into one.
func (e *Evictor) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Run evicts when needed: at start, every Interval, and after each Kick. It
// returns nil once ctx is done.
func (e *Evictor) Run(ctx context.Context) error {
	t := time.NewTicker(e.interval)
	defer t.Stop()
	for {
		_, _ = e.pass(ctx, passAuto, 0) // errors are ctx's, or logged
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-e.kick:
		}
	}
}

// EvictNow runs one pass synchronously down to the low watermark (and to
// MinFree plus the hysteresis gap), whatever the high watermark says. It
// waits for a pass in progress. The error is ctx's, when ctx ends first; the
// Result then tells what was done.
func (e *Evictor) EvictNow(ctx context.Context) (Result, error) {
	return e.pass(ctx, passNow, 0)
}

// EnsureFree evicts until need more bytes fit under MaxBytes and, when
// FreeSpace is set, MinFree+need bytes are free on the filesystem. It is
// meant for a write that failed with ENOSPC: evict, then retry once. It
// returns an error wrapping [ErrNoRoom] when that room cannot be made.
func (e *Evictor) EnsureFree(ctx context.Context, need int64) (Result, error) {
	need = max(need, 0)
	if need > e.maxBytes {
		e.mu.Lock()
		res := Result{Remaining: e.bytes}
		e.mu.Unlock()
		return res, fmt.Errorf("%w: %s does not fit in a budget of %s",
			ErrNoRoom, humanize.IBytes(uint64(need)), humanize.IBytes(uint64(e.maxBytes)))
	}
	return e.pass(ctx, passEnsure, need)
}

// Stats returns a snapshot of the counters.
func (e *Evictor) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Stats{
		Bytes:        e.bytes,
		Blobs:        e.blobs,
		PinnedBytes:  e.pinnedBytes,
		PinnedBlobs:  e.pinnedBlobs,
		Held:         int64(len(e.holds)),
		MaxBytes:     e.maxBytes,
		HighBytes:    e.highBytes,
		LowBytes:     e.lowBytes,
		MinFree:      e.minFree,
		EvictedBlobs: e.evictedBlobs,
		EvictedBytes: e.evictedBytes,
		Vanished:     e.vanished,
		DeleteErrors: e.deleteErrors,
		Passes:       e.passes,
		Stuck:        e.stuck,
	}
}
