package eviction

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"slices"
	"strings"
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
	entries     map[string]*entry
	lru         lruList
	holds       map[string]int
	inflight    map[string]*entry   // keys whose Delete is running
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
		entries:     make(map[string]*entry),
		holds:       make(map[string]int),
		inflight:    make(map[string]*entry),
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
	e.lru.init()
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
	if x.pinned {
		e.pinnedBytes += sign * x.size
		e.pinnedBlobs += sign
	}
}

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
	if x := e.entries[ent.Key]; x != nil && !x.deleting {
		if x.size != size {
			e.count(x, -1)
			x.size = size
			e.count(x, 1)
		}
		if ent.Pinned {
			e.setPinnedLocked(x, true)
		}
		if last > x.last {
			x.last = last
			if !atBack && x.linked() {
				e.lru.moveToFront(x)
			}
		}
		return
	}
	// New key, or a key whose Delete is in flight (the caller should have
	// held it; the new entry replaces the doomed one).
	x := &entry{key: ent.Key, size: size, last: last, pinned: ent.Pinned}
	if _, ok := e.pendingPins[ent.Key]; ok {
		x.pinned = true
		delete(e.pendingPins, ent.Key)
	}
	e.entries[ent.Key] = x
	e.count(x, 1)
	if x.pinned {
		return
	}
	if atBack {
		e.lru.pushBack(x)
	} else {
		e.lru.pushFront(x)
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
	if x := e.entries[key]; x != nil && t > x.last {
		x.last = t
		if x.linked() {
			e.lru.moveToFront(x)
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
	x := e.entries[key]
	if x == nil {
		return
	}
	delete(e.entries, key)
	if x.pinned {
		e.pendingPins[key] = struct{}{}
	}
	if x.deleting { // already uncounted by the pass
		return
	}
	e.count(x, -1)
	if x.linked() {
		e.lru.remove(x)
	}
	x.parked = false
}

// SetPinned pins or unpins key. Pinned blobs are never evicted. A pin is on
// the key: pinning a key not yet added (or removed since) is remembered and
// applies when it is added; only SetPinned(key, false) drops a pin. An unpinned
// blob rejoins the order by its last access (a walk from the least recently
// used end: unpinning is rare).
func (e *Evictor) SetPinned(key string, pinned bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := e.entries[key]
	if x == nil {
		if pinned {
			e.pendingPins[key] = struct{}{}
		} else {
			delete(e.pendingPins, key)
		}
		return
	}
	e.setPinnedLocked(x, pinned)
}

func (e *Evictor) setPinnedLocked(x *entry, pinned bool) {
	if x.pinned == pinned {
		return
	}
	if x.deleting { // uncounted; the pass settles it
		x.pinned = pinned
		return
	}
	if pinned {
		e.pinnedBytes += x.size
		e.pinnedBlobs++
	} else {
		e.pinnedBytes -= x.size
		e.pinnedBlobs--
	}
	x.pinned = pinned
	if x.parked { // relinked (or not) when its pass ends
		return
	}
	if pinned {
		e.lru.remove(x)
	} else {
		e.lru.insertByAge(x)
	}
}

// Hold protects key from eviction until release is called; holds nest. The
// proxy holds a digest while a fill for it is in progress and while it
// commits, so the key may be unknown yet. If a Delete of key is in flight,
// Hold waits for it to return: once Hold returns, no Delete of key runs
// until release. release is idempotent.
func (e *Evictor) Hold(key string) (release func()) {
	e.mu.Lock()
	for e.inflight[key] != nil {
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

type passKind int

const (
	passAuto   passKind = iota // Run: only when over the high watermark or under MinFree
	passNow                    // EvictNow: down to the low watermark
	passEnsure                 // EnsureFree: make room for need bytes
)

// parked is an entry whose Delete failed in this pass, and its last access
// when it was chosen (a Touch since then sends it to the front).
type parked struct {
	x    *entry
	last int64
}

// pass runs one eviction pass: while usage > limit or fewer than deficit
// bytes have been freed, delete the least recently used evictable entry.
func (e *Evictor) pass(ctx context.Context, kind passKind, need int64) (Result, error) {
	select {
	case e.passSem <- struct{}{}:
	case <-ctx.Done():
		return Result{Remaining: e.Stats().Bytes}, ctx.Err()
	}
	defer func() { <-e.passSem }()
	start := time.Now()

	free, haveFree := e.readFree()

	e.mu.Lock()
	before := e.bytes
	e.mu.Unlock()

	limit, deficit := int64(math.MaxInt64), int64(0)
	var reasons []string
	gap := e.highBytes - e.lowBytes
	switch kind {
	case passAuto:
		if before > e.highBytes {
			limit = e.lowBytes
			reasons = append(reasons, "over high watermark")
		}
		if haveFree && free < e.minFree {
			deficit = e.minFree + gap - free
			reasons = append(reasons, "under min free")
		}
	case passNow:
		limit = e.lowBytes
		reasons = append(reasons, "evict now")
		if haveFree && free < e.minFree {
			deficit = e.minFree + gap - free
			reasons = append(reasons, "under min free")
		}
	case passEnsure:
		limit = e.maxBytes - need
		reasons = append(reasons, "ensure free "+humanize.IBytes(uint64(need)))
		if haveFree && e.minFree+need > free {
			deficit = e.minFree + need - free
		}
	}

	var (
		res    Result
		err    error
		freed  int64
		failed []parked
		stuck  bool
	)
	// Never delete toward a target that deleting everything evictable
	// would not reach (room.go).
	if limitOK, deficitOK, evictable := e.reachable(limit, deficit); kind == passEnsure && (!limitOK || !deficitOK) {
		res.Remaining = e.Stats().Bytes
		return res, fmt.Errorf("%w: need %s; evicting all %s evictable would not make it (usage %s, budget %s, min free %s, free %s)",
			ErrNoRoom, humanize.IBytes(uint64(need)), humanize.IBytes(uint64(evictable)), humanize.IBytes(uint64(res.Remaining)),
			humanize.IBytes(uint64(e.maxBytes)), humanize.IBytes(uint64(e.minFree)), humanize.IBytes(uint64(max(free, 0))))
	} else if !deficitOK {
		e.log.Warn("eviction: min_free cannot be reached by evicting everything evictable; not evicting for it",
			"deficit", humanize.IBytes(uint64(deficit)), "evictable", humanize.IBytes(uint64(evictable)))
		deficit = 0
		stuck = true
	}
	for {
		if err = ctx.Err(); err != nil {
			break
		}
		e.mu.Lock()
		if e.bytes <= limit && freed >= deficit {
			e.mu.Unlock()
			break
		}
		x := e.victimLocked()
		if x == nil {
			stuck = true
			e.mu.Unlock()
			break
		}
		e.lru.remove(x)
		e.count(x, -1)
		x.deleting = true
		e.inflight[x.key] = x
		chosenLast := x.last
		e.mu.Unlock()

		derr := e.del.Delete(x.key)

		e.mu.Lock()
		delete(e.inflight, x.key)
		x.deleting = false
		current := e.entries[x.key] == x
		gone := derr == nil || e.isNotFound(derr)
		switch {
		case gone:
			freed += x.size
			if current {
				delete(e.entries, x.key)
				if x.pinned { // pinned while its Delete ran: keep the wish
					e.pendingPins[x.key] = struct{}{}
				}
			}
			if derr == nil {
				res.Blobs++
				res.Bytes += x.size
				e.evictedBlobs++
				e.evictedBytes += x.size
			} else {
				e.vanished++
			}
		default:
			res.Failed++
			e.deleteErrors++
			if current {
				e.count(x, 1)
				x.parked = true
				failed = append(failed, parked{x, chosenLast})
			}
		}
		if e.waiters > 0 {
			e.inflightEnd.Broadcast()
		}
		e.mu.Unlock()

		switch {
		case derr == nil:
		case gone:
			e.log.Info("eviction: blob already gone", "key", x.key, "err", derr)
		default:
			e.log.Error("eviction: delete failed; kept for the next pass", "key", x.key, "err", derr)
		}
	}

	e.mu.Lock()
	// Failed entries go back where they were (least recently used end, in
	// their order) unless touched meanwhile; the next pass retries them.
	for i := len(failed) - 1; i >= 0; i-- {
		x := failed[i].x
		if e.entries[x.key] != x || !x.parked {
			continue
		}
		x.parked = false
		if x.pinned {
			continue
		}
		if x.last != failed[i].last {
			e.lru.pushFront(x)
		} else {
			e.lru.pushBack(x)
		}
	}
	res.Remaining = e.bytes
	wasStuck := e.stuck
	if err == nil {
		e.stuck = stuck
	}
	e.passes++
	pinnedBytes := e.pinnedBytes
	hook := e.onPass
	e.mu.Unlock()

	e.logPass(kind, reasons, res, before, pinnedBytes, time.Since(start), stuck, wasStuck, err)
	if hook != nil {
		hook(res)
	}
	if kind == passEnsure && stuck && err == nil {
		err = fmt.Errorf("%w: everything left is pinned, held or failing to delete (usage %s, budget %s, need %s)",
			ErrNoRoom, humanize.IBytes(uint64(res.Remaining)), humanize.IBytes(uint64(e.maxBytes)), humanize.IBytes(uint64(need)))
	}
	return res, err
}

// victimLocked returns the least recently used entry that is not held, or
// nil. Pinned, in-flight and parked entries are not in the list at all; held
// keys are few (fills in progress), so skipping them is cheap.
func (e *Evictor) victimLocked() *entry {
	for x := e.lru.back(); x != nil; x = e.lru.towardFront(x) {
		if len(e.holds) == 0 || e.holds[x.key] == 0 {
			return x
		}
	}
	return nil
}

func (e *Evictor) logPass(kind passKind, reasons []string, res Result, before, pinned int64, d time.Duration, stuck, wasStuck bool, err error) {
	level := slog.LevelDebug
	msg := "eviction pass"
	if res.Blobs > 0 || res.Failed > 0 || kind != passAuto {
		level = slog.LevelInfo
	}
	if stuck && (!wasStuck || kind != passAuto) {
		level = slog.LevelWarn
		msg = "eviction pass stopped short: everything left is pinned, held or failing to delete"
	}
	if err != nil {
		msg = "eviction pass interrupted"
	}
	if !e.log.Enabled(context.Background(), level) {
		return
	}
	reason := strings.Join(reasons, ", ")
	if reason == "" {
		reason = "nothing to do"
	}
	e.log.Log(context.Background(), level, msg,
		"reason", reason,
		"blobs", res.Blobs,
		"bytes", humanize.IBytes(uint64(res.Bytes)),
		"failed", res.Failed,
		"duration", d,
		"before", humanize.IBytes(uint64(before)),
		"after", humanize.IBytes(uint64(res.Remaining)),
		"budget", humanize.IBytes(uint64(e.maxBytes)),
		"low", humanize.IBytes(uint64(e.lowBytes)),
		"high", humanize.IBytes(uint64(e.highBytes)),
		"pinned", humanize.IBytes(uint64(pinned)),
		"stuck", stuck,
	)
}
