package eviction

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regmirror/regmirror/internal/testlog"
)

// fakeDeleter records deletions. fail maps keys to the error Delete returns;
// before, when set, runs at the start of every Delete (gates, assertions).
type fakeDeleter struct {
	mu      sync.Mutex
	deleted []string
	fail    map[string]error
	before  func(key string)
}

func (d *fakeDeleter) Delete(key string) error {
	if d.before != nil {
		d.before(key)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.fail[key]; err != nil {
		return err
	}
	d.deleted = append(d.deleted, key)
	return nil
}

func (d *fakeDeleter) got() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.deleted)
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testlog.Buffer

func newTest(t *testing.T, opts Options, d Deleter) (*Evictor, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e, err := New(opts, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkInvariants(t, e) })
	return e, logs
}

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func at(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }

// addN adds keys k0..k(n-1) of the given size, k0 least recently used.
func addN(e *Evictor, prefix string, n int, size int64) []string {
	keys := make([]string, n)
	for i := range n {
		keys[i] = fmt.Sprintf("%s%d", prefix, i)
		e.Add(Entry{Key: keys[i], Size: size, LastAccess: at(i)})
	}
	return keys
}

// checkInvariants verifies the bookkeeping: counters equal the sums over the
// entries, and the list holds exactly the unpinned, counted, unparked entries.
func checkInvariants(t *testing.T, e *Evictor) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	var bytes, blobs, pb, pn int64
	wantLinked := 0
	live := map[slot]string{} // every indexed entry, with its key
	for k, i := range e.index.raw {
		live[i] = k
	}
	cells := 0
	for _, i := range e.index.cells {
		if i != 0 {
			live[i] = e.keyOf(i)
			cells++
		}
	}
	if cells != e.index.n {
		t.Errorf("key table holds %d cells, counts %d", cells, e.index.n)
	}
	for i, k := range live {
		x := e.arena.at(i)
		if e.lookup(k) != i {
			t.Errorf("entry %q in slot %d, lookup says %d", k, i, e.lookup(k))
		}
		if x.is(flagRemoved) {
			t.Errorf("entry %q indexed but removed", k)
		}
		if x.is(flagDeleting) {
			continue
		}
		bytes += x.size
		blobs++
		if x.is(flagPinned) {
			pb += x.size
			pn++
		}
		if x.linked() != (!x.is(flagPinned) && !x.is(flagParked)) {
			t.Errorf("entry %q: linked=%v pinned=%v parked=%v", k, x.linked(), x.is(flagPinned), x.is(flagParked))
		}
		if !x.is(flagPinned) && !x.is(flagParked) {
			wantLinked++
		}
	}
	if bytes != e.bytes || blobs != e.blobs || pb != e.pinnedBytes || pn != e.pinnedBlobs {
		t.Errorf("counters bytes=%d blobs=%d pinned=%d/%d; entries say %d %d %d/%d",
			e.bytes, e.blobs, e.pinnedBytes, e.pinnedBlobs, bytes, blobs, pb, pn)
	}
	n := 0
	for i := e.arena.slots[0].next; i != 0; i = e.arena.slots[i].next {
		if e.arena.slots[e.arena.slots[i].next].prev != i || live[i] == "" {
			t.Fatalf("list broken at slot %d (%q)", i, live[i])
		}
		n++
	}
	if n != e.arena.len || n != wantLinked {
		t.Errorf("list has %d nodes, len %d, want %d", n, e.arena.len, wantLinked)
	}
	// No slot leaks: every slot is live or free once no pass runs.
	free := 0
	for i := e.arena.free; i != 0; i = -2 - e.arena.slots[i].next {
		free++
	}
	if free+len(live)+1 != len(e.arena.slots) {
		t.Errorf("%d slots: %d live, %d free (+ the sentinel)", len(e.arena.slots), len(live), free)
	}
	if len(e.inflight) != 0 {
		t.Errorf("%d deletes still in flight", len(e.inflight))
	}
}

func TestNewValidates(t *testing.T) {
	d := &fakeDeleter{}
	tests := []struct {
		name string
		opts Options
		d    Deleter
		ok   bool
	}{
		{"defaults", Options{MaxBytes: 1}, d, true},
		{"explicit", Options{MaxBytes: 100, HighWatermark: 1, LowWatermark: 0.5}, d, true},
		{"no deleter", Options{MaxBytes: 1}, nil, false},
		{"zero budget", Options{}, d, false},
		{"negative budget", Options{MaxBytes: -1}, d, false},
		{"high over 1", Options{MaxBytes: 1, HighWatermark: 1.1}, d, false},
		{"low over high", Options{MaxBytes: 1, HighWatermark: 0.5, LowWatermark: 0.6}, d, false},
		{"low equals high", Options{MaxBytes: 1, HighWatermark: 0.8, LowWatermark: 0.8}, d, false},
		{"high below default low", Options{MaxBytes: 1, HighWatermark: 0.8}, d, false},
		{"negative low", Options{MaxBytes: 1, LowWatermark: -0.1}, d, false},
		{"negative min free", Options{MaxBytes: 1, MinFree: -1}, d, false},
		{"negative interval", Options{MaxBytes: 1, Interval: -time.Second}, d, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts, tt.d)
			if (err == nil) != tt.ok {
				t.Fatalf("New(%+v) error = %v, want ok=%v", tt.opts, err, tt.ok)
			}
		})
	}
	e, _ := New(Options{MaxBytes: 1000}, d)
	if s := e.Stats(); s.HighBytes != 950 || s.LowBytes != 850 || e.interval != DefaultInterval {
		t.Fatalf("defaults: high %d low %d interval %v", s.HighBytes, s.LowBytes, e.interval)
	}
}

func TestLRUOrder(t *testing.T) {
	d := &fakeDeleter{}
	e, _ := newTest(t, Options{MaxBytes: 100, HighWatermark: 0.2, LowWatermark: 0.1}, d)
	addN(e, "k", 10, 10) // k0 oldest
	e.Touch("k0", at(100))
	e.Touch("k2", at(101))
	e.Touch("k1", at(-5))       // older than k1's access: ignored
	e.Touch("k3", time.Time{})  // zero: ignored
	e.Touch("unknown", at(200)) // unknown: ignored
	res, err := e.EvictNow(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"k1", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k0"}
	if got := d.got(); !slices.Equal(got, want) {
		t.Fatalf("evicted %v, want %v", got, want)
	}
	if res.Blobs != 9 || res.Bytes != 90 || res.Remaining != 10 {
		t.Fatalf("result %+v", res)
	}
}

func TestLoadSortsOnceAndGoesBehindLiveEntries(t *testing.T) {
	d := &fakeDeleter{}
	e, _ := newTest(t, Options{MaxBytes: 1000, HighWatermark: 0.2, LowWatermark: 0.01}, d)
	e.Add(Entry{Key: "live", Size: 10, LastAccess: at(0)}) // older time, but added live
	e.Load([]Entry{
		{Key: "b", Size: 10, LastAccess: at(20)},
		{Key: "a", Size: 10, LastAccess: at(10)},
		{Key: "c", Size: 10, LastAccess: at(30)},
		{Key: "z", Size: 10}, // unknown access: oldest
		{Key: "live", Size: 20, LastAccess: at(50)},
		{Key: "p", Size: 10, LastAccess: at(5), Pinned: true},
	})
	if s := e.Stats(); s.Blobs != 6 || s.Bytes != 70 || s.PinnedBlobs != 1 {
		t.Fatalf("stats after load %+v", s)
	}
	if _, err := e.EvictNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := []string{"z", "a", "b", "c", "live"}
	if got := d.got(); !slices.Equal(got, want) {
		t.Fatalf("evicted %v, want %v", got, want)
	}
}

func TestAddIsIdempotent(t *testing.T) {
	e, _ := newTest(t, Options{MaxBytes: 1000}, &fakeDeleter{})
	e.Add(Entry{Key: "a", Size: 10})
	e.Add(Entry{Key: "a", Size: 10})
	e.Add(Entry{Key: "b", Size: 5})
	e.Add(Entry{Key: "b", Size: 7})
	e.Add(Entry{Key: "", Size: 7})
	e.Add(Entry{Key: "neg", Size: -3})
	if s := e.Stats(); s.Blobs != 3 || s.Bytes != 17 {
		t.Fatalf("stats %+v", s)
	}
	e.Remove("a")
	e.Remove("a")
	e.Remove("nope")
	if s := e.Stats(); s.Blobs != 2 || s.Bytes != 7 {
		t.Fatalf("stats after remove %+v", s)
	}
}

func TestWatermarks(t *testing.T) {
	d := &fakeDeleter{}
	e, _ := newTest(t, Options{MaxBytes: 1000}, d) // high 950, low 850
	addN(e, "k", 95, 10)                           // exactly at high: not over
	if res, _ := e.pass(t.Context(), passAuto, 0); res.Blobs != 0 {
		t.Fatalf("evicted at the high watermark: %+v", res)
	}
	e.Add(Entry{Key: "over", Size: 10})
	res, err := e.pass(t.Context(), passAuto, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Remaining != 850 || res.Blobs != 11 {
		t.Fatalf("after pass %+v, want 11 blobs evicted down to 850", res)
	}
	s := e.Stats()
	if s.EvictedBlobs != 11 || s.EvictedBytes != 110 || s.Bytes != 850 || s.Stuck {
		t.Fatalf("stats %+v", s)
	}
	// Below high but above low: a Run pass leaves it, EvictNow goes to low.
	addN(e, "m", 5, 10) // 900
	if res, _ := e.pass(t.Context(), passAuto, 0); res.Blobs != 0 {
		t.Fatalf("auto pass under high evicted: %+v", res)
	}
	if res, _ := e.EvictNow(t.Context()); res.Remaining != 850 || res.Blobs != 5 {
		t.Fatalf("EvictNow %+v", res)
	}
}

func TestWatermarksMixedSizesStopAtLow(t *testing.T) {
	d := &fakeDeleter{}
	e, _ := newTest(t, Options{MaxBytes: 10_000}, d)
	sizes := map[string]int64{}
	for i := range 200 {
		k := fmt.Sprintf("k%d", i)
		sizes[k] = int64(1 + (i*37)%97)
		e.Add(Entry{Key: k, Size: sizes[k], LastAccess: at(i)})
	}
	before := e.Stats().Bytes
	res, err := e.EvictNow(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := d.got()
	last := sizes[got[len(got)-1]]
	if res.Remaining > 8500 || res.Remaining+last <= 8500 {
		t.Fatalf("remaining %d (last evicted %d): want ≤ low 8500 without over-evicting", res.Remaining, last)
	}
	if before-res.Bytes != res.Remaining {
		t.Fatalf("before %d - evicted %d != remaining %d", before, res.Bytes, res.Remaining)
	}
}

func TestAddKicksWhenCrossingHigh(t *testing.T) {
	e, _ := newTest(t, Options{MaxBytes: 100}, &fakeDeleter{})
	e.Add(Entry{Key: "a", Size: 95})
	if len(e.kick) != 0 {
		t.Fatal("kicked at the high watermark")
	}
	e.Add(Entry{Key: "b", Size: 1})
	if len(e.kick) != 1 {
		t.Fatal("no kick when crossing high")
	}
	for range 10 {
		e.Kick() // coalesces, never blocks
	}
	if len(e.kick) != 1 {
		t.Fatal("kicks did not coalesce")
	}
}

func TestPinnedNeverEvicted(t *testing.T) {
	d := &fakeDeleter{}
	e, logs := newTest(t, Options{MaxBytes: 100}, d)
	e.SetPinned("p1", true) // before it exists: remembered
	e.Add(Entry{Key: "p1", Size: 40, LastAccess: at(0)})
	e.Add(Entry{Key: "p2", Size: 60, LastAccess: at(1), Pinned: true})
	e.Add(Entry{Key: "u", Size: 30, LastAccess: at(2)})
	e.Add(Entry{Key: "p2", Size: 60}) // re-add without Pinned keeps the pin
	res, err := e.EvictNow(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := d.got(); !slices.Equal(got, []string{"u"}) {
		t.Fatalf("evicted %v, want only the unpinned u", got)
	}
	s := e.Stats()
	if res.Remaining != 100 || !s.Stuck || s.PinnedBytes != 100 || s.PinnedBlobs != 2 {
		t.Fatalf("result %+v stats %+v: want 100 pinned bytes left (over low 85) and Stuck", res, s)
	}
	if !strings.Contains(logs.String(), "stopped short") {
		t.Fatalf("no warning about staying over budget in logs:\n%s", logs)
	}
	if _, err := e.EnsureFree(t.Context(), 50); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("EnsureFree with everything pinned: %v, want ErrNoRoom", err)
	}

	// Unpinning rejoins by last access: p1 (oldest) goes before a newer blob.
	e.Add(Entry{Key: "n", Size: 10, LastAccess: at(10)})
	e.SetPinned("p1", false)
	e.SetPinned("ghost", true)
	e.SetPinned("ghost", false)
	if _, err := e.EvictNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := d.got(); !slices.Equal(got, []string{"u", "p1"}) {
		t.Fatalf("evicted %v, want u then p1", got)
	}
	if s := e.Stats(); s.Stuck || s.Bytes != 70 || s.PinnedBlobs != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestHeldNeverEvicted(t *testing.T) {
	d := &fakeDeleter{}
	e, _ := newTest(t, Options{MaxBytes: 100, HighWatermark: 0.5, LowWatermark: 0.1}, d)
	release := e.Hold("a")  // held before it exists: a fill in progress
	release2 := e.Hold("a") // holds nest
	e.Add(Entry{Key: "a", Size: 30, LastAccess: at(0)})
	e.Add(Entry{Key: "b", Size: 30, LastAccess: at(1)})
	if s := e.Stats(); s.Held != 1 {
		t.Fatalf("held %d, want 1", s.Held)
	}
	res, err := e.EvictNow(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := d.got(); !slices.Equal(got, []string{"b"}) || res.Remaining != 30 || !e.Stats().Stuck {
		t.Fatalf("evicted %v (%+v), want only b and Stuck", got, res)
	}
	release()
	release() // idempotent: must not drop the second hold
	if _, err := e.EvictNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := d.got(); len(got) != 1 {
		t.Fatalf("evicted %v while still held once", got)
	}
	release2()
	if _, err := e.EvictNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := d.got(); !slices.Equal(got, []string{"b", "a"}) {
		t.Fatalf("evicted %v, want a evictable after release", got)
	}
	if s := e.Stats(); s.Held != 0 || s.Bytes != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestHoldWaitsForDeleteInFlight: once Hold returns, no Delete of the key is
// running, so a fill may commit the key safely.
func TestHoldWaitsForDeleteInFlight(t *testing.T) {
	inDelete := make(chan struct{})
	gate := make(chan struct{})
	d := &fakeDeleter{before: func(string) {
		close(inDelete)
		<-gate
	}}
	e, _ := newTest(t, Options{MaxBytes: 100, HighWatermark: 0.5, LowWatermark: 0.1}, d)
	e.Add(Entry{Key: "a", Size: 60})
	passDone := make(chan struct{})
	go func() {
		defer close(passDone)
		_, _ = e.EvictNow(context.Background())
	}()
	<-inDelete
	held := make(chan func())
	go func() { held <- e.Hold("a") }()
	for { // wait until Hold is parked on the condition (no sleeps)
		e.mu.Lock()
		w := e.waiters
		e.mu.Unlock()
		if w == 1 {
			break
		}
		runtime.Gosched()
	}
	select {
	case <-held:
		t.Fatal("Hold returned while Delete of the key was in flight")
	default:
	}
	close(gate)
	release := <-held
	<-passDone
	// The fill commits again under the hold; a pass must not delete it.
	e.Add(Entry{Key: "a", Size: 60})
	d.before = nil
	if _, err := e.EvictNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := d.got(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("deleted %v, want a once", got)
	}
	release()
}

func TestMinFree(t *testing.T) {
	var mu sync.Mutex
	free := int64(100)
	d := &fakeDeleter{}
	var e *Evictor
	d.before = func(key string) {
		mu.Lock()
		defer mu.Unlock()
		free += 10 // every blob in this test is 10 bytes
	}
	e, _ = newTest(t, Options{
		MaxBytes: 10_000, // high 9500, low 8500: gap 1000; the budget is not the constraint
		MinFree:  300,
		FreeSpace: func() (int64, error) {
			mu.Lock()
			defer mu.Unlock()
			return free, nil
		},
	}, d)
	addN(e, "k", 200, 10) // 2000 bytes, far under budget
	res, err := e.pass(t.Context(), passAuto, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Deficit = MinFree 300 + gap 1000 - free 100 = 1200 bytes = 120 blobs.
	if res.Blobs != 120 || res.Remaining != 800 || free != 1300 {
		t.Fatalf("result %+v free %d: want 120 blobs evicted and 1300 free", res, free)
	}
	if got := d.got(); got[0] != "k0" || got[119] != "k119" {
		t.Fatalf("evicted out of LRU order: %v", got[:3])
	}
	// Free is fine now: nothing more.
	if res, _ := e.pass(t.Context(), passAuto, 0); res.Blobs != 0 {
		t.Fatalf("second pass evicted %+v", res)
	}
}

// TestMinFreeUnreachableEvictsNothing: a min_free that evicting everything
// could not reach (here larger than the filesystem) deletes nothing, where it
// used to empty the cache on every pass; the pass says it is stuck.
func TestMinFreeUnreachableEvictsNothing(t *testing.T) {
	d := &fakeDeleter{}
	e, logs := newTest(t, Options{
		MaxBytes:  10_000,
		MinFree:   1 << 40,
		FreeSpace: func() (int64, error) { return 0, nil }, // never improves
	}, d)
	addN(e, "k", 5, 10)
	e.Add(Entry{Key: "pin", Size: 10, Pinned: true})
	res, err := e.pass(t.Context(), passAuto, 0)
	if err != nil || res.Blobs != 0 || res.Remaining != 60 || !e.Stats().Stuck || len(d.got()) != 0 {
		t.Fatalf("result %+v err %v stats %+v deleted %v", res, err, e.Stats(), d.got())
	}
	if !strings.Contains(logs.String(), "min_free cannot be reached") {
		t.Fatalf("no warning:\n%s", logs)
	}
}

// TestEnsureFreeUnreachable: EnsureFree refuses, deleting nothing, a need
// that evicting everything evictable would not meet: on the budget (pins and
// holds stay) or on the filesystem (free + evictable − MinFree).
func TestEnsureFreeUnreachable(t *testing.T) {
	d := &fakeDeleter{}
	e, _ := newTest(t, Options{MaxBytes: 1000}, d)
	addN(e, "k", 5, 100) // 500 evictable
	e.Add(Entry{Key: "pin", Size: 300, Pinned: true})
	release := e.Hold("k4")
	defer release()
	// 1000 − 300 pinned − 100 held = 600 at most; 650 is unreachable.
	if _, err := e.EnsureFree(t.Context(), 650); !errors.Is(err, ErrNoRoom) || len(d.got()) != 0 {
		t.Fatalf("EnsureFree(650): %v, deleted %v; want ErrNoRoom and nothing deleted", err, d.got())
	}
	if _, err := e.EnsureFree(t.Context(), 550); err != nil {
		t.Fatalf("EnsureFree(550): %v", err)
	}

	var free int64 = 100
	d2 := &fakeDeleter{}
	d2.before = func(string) { free += 10 }
	e2, _ := newTest(t, Options{MaxBytes: 1 << 30, MinFree: 20, FreeSpace: func() (int64, error) { return free, nil }}, d2)
	addN(e2, "k", 10, 10) // 100 evictable: at most 100 + 100 − 20 = 180 can be made free
	if _, err := e2.EnsureFree(t.Context(), 181); !errors.Is(err, ErrNoRoom) || len(d2.got()) != 0 {
		t.Fatalf("EnsureFree(181): %v, deleted %v; want ErrNoRoom and nothing deleted", err, d2.got())
	}
}

// TestCanFit: the cannot-fit rule, on the budget's low watermark beside what
// cannot be evicted, and on what eviction could free on the filesystem.
func TestCanFit(t *testing.T) {
	e, _ := newTest(t, Options{MaxBytes: 1000}, &fakeDeleter{}) // low 850
	addN(e, "k", 5, 100)
	e.Add(Entry{Key: "pin", Size: 100, Pinned: true})
	if err := e.CanFit(750); err != nil {
		t.Fatalf("750 beside 100 pinned under 850: %v", err)
	}
	if err := e.CanFit(751); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("751: %v, want ErrNoRoom", err)
	}
	if err := e.CanFit(0); err != nil {
		t.Fatalf("the empty blob: %v", err)
	}

	free := int64(50)
	e2, _ := newTest(t, Options{MaxBytes: 1 << 40, MinFree: 30, FreeSpace: func() (int64, error) { return free, nil }}, &fakeDeleter{})
	addN(e2, "k", 4, 100) // 400 evictable: 50 + 400 − 30 = 420
	if err := e2.CanFit(420); err != nil {
		t.Fatalf("420: %v", err)
	}
	if err := e2.CanFit(421); !errors.Is(err, ErrNoRoom) || !strings.Contains(err.Error(), "filesystem") {
		t.Fatalf("421: %v, want ErrNoRoom on the filesystem", err)
	}
}

func TestFreeSpaceErrorIgnoresMinFree(t *testing.T) {
	d := &fakeDeleter{}
	e, logs := newTest(t, Options{
		MaxBytes:  1000,
		MinFree:   500,
		FreeSpace: func() (int64, error) { return 0, errors.New("statfs: boom") },
	}, d)
	addN(e, "k", 5, 10)
	if res, err := e.pass(t.Context(), passAuto, 0); err != nil || res.Blobs != 0 {
		t.Fatalf("result %+v err %v", res, err)
	}
	if !strings.Contains(logs.String(), "statfs: boom") {
		t.Fatal("FreeSpace error not logged")
	}
}

func TestEnsureFree(t *testing.T) {
	d := &fakeDeleter{}
	e, _ := newTest(t, Options{MaxBytes: 1000}, d)
	addN(e, "k", 90, 10) // 900: under high
	res, err := e.EnsureFree(t.Context(), 250)
	if err != nil {
		t.Fatal(err)
	}
	if res.Remaining != 750 || res.Blobs != 15 {
		t.Fatalf("result %+v, want 750 left so 250 fit in 1000", res)
	}
	if _, err := e.EnsureFree(t.Context(), 1001); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("need over budget: %v", err)
	}
	if len(d.got()) != 15 {
		t.Fatal("an impossible EnsureFree evicted")
	}

	// With FreeSpace: the filesystem is the constraint (ENOSPC under budget).
	var free int64
	d2 := &fakeDeleter{}
	d2.before = func(string) { free += 10 }
	e2, _ := newTest(t, Options{MaxBytes: 1 << 30, MinFree: 20, FreeSpace: func() (int64, error) { return free, nil }}, d2)
	addN(e2, "k", 50, 10)
	res, err = e2.EnsureFree(t.Context(), 100)
	if err != nil || res.Blobs != 12 || free != 120 {
		t.Fatalf("result %+v err %v free %d: want MinFree+need = 120 free", res, err, free)
	}
}

func TestDeleteErrors(t *testing.T) {
	d := &fakeDeleter{fail: map[string]error{
		"k1": errors.New("EIO"),
		"k2": fmt.Errorf("remove blob: %w", fs.ErrNotExist),
	}}
	e, logs := newTest(t, Options{MaxBytes: 100, HighWatermark: 0.5, LowWatermark: 0.25}, d)
	addN(e, "k", 10, 10) // 100
	res, err := e.EvictNow(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// k0 deleted, k1 fails and is skipped, k2 gone (dropped, not evicted), then
	// k3..k7 until ≤ 25... k1 still counts: 10 (k1) + k8,k9 = 30 > 25 → k8.
	if got := d.got(); !slices.Equal(got, []string{"k0", "k3", "k4", "k5", "k6", "k7", "k8"}) {
		t.Fatalf("deleted %v", got)
	}
	s := e.Stats()
	if res.Failed != 1 || s.DeleteErrors != 1 || s.Vanished != 1 || s.EvictedBlobs != 7 || res.Remaining != 20 || s.Stuck {
		t.Fatalf("result %+v stats %+v", res, s)
	}
	if !strings.Contains(logs.String(), "EIO") {
		t.Fatal("delete error not logged")
	}
	// k1 is kept at the LRU end and retried first by the next pass.
	delete(d.fail, "k1")
	e.Add(Entry{Key: "new", Size: 10}) // 30 > low 25
	if res, _ := e.EvictNow(t.Context()); res.Blobs != 1 || res.Remaining != 20 {
		t.Fatalf("retry pass %+v", res)
	}
	if got := d.got(); got[len(got)-1] != "k1" {
		t.Fatalf("retry deleted %v, want k1", got)
	}
}

func TestIsNotFoundOption(t *testing.T) {
	errGone := errors.New("blob unknown")
	d := &fakeDeleter{fail: map[string]error{"k0": errGone, "k1": fs.ErrNotExist}}
	e, _ := newTest(t, Options{
		MaxBytes: 100, HighWatermark: 0.5, LowWatermark: 0.1,
		IsNotFound: func(err error) bool { return errors.Is(err, errGone) },
	}, d)
	addN(e, "k", 3, 10) // 30 bytes, low 10: k0 gone, k1 fails, k2 deleted
	if _, err := e.EvictNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s := e.Stats(); s.Vanished != 1 || s.DeleteErrors != 1 || s.EvictedBlobs != 1 || s.Blobs != 1 {
		t.Fatalf("stats %+v: want k0 dropped, k1 kept", s)
	}
}

// TestRemoveFromDelete mirrors main's wiring: the cache reports its own
// deletion back (BlobRemoved → Remove) before Delete returns.
func TestRemoveFromDelete(t *testing.T) {
	d := &fakeDeleter{}
	var e *Evictor
	d.before = func(key string) { e.Remove(key) }
	e, _ = newTest(t, Options{MaxBytes: 100, HighWatermark: 0.5, LowWatermark: 0.1}, d)
	addN(e, "k", 5, 10)
	res, err := e.EvictNow(t.Context())
	if err != nil || res.Blobs != 4 || res.Remaining != 10 {
		t.Fatalf("result %+v err %v", res, err)
	}
	if s := e.Stats(); s.Bytes != 10 || s.Blobs != 1 || s.EvictedBytes != 40 {
		t.Fatalf("stats %+v", s)
	}
}

func TestEvictNowCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	d := &fakeDeleter{}
	d.before = func(string) { cancel() }
	e, _ := newTest(t, Options{MaxBytes: 100, HighWatermark: 0.5, LowWatermark: 0.1}, d)
	addN(e, "k", 5, 10)
	res, err := e.EvictNow(ctx)
	if !errors.Is(err, context.Canceled) || res.Blobs != 1 || res.Remaining != 40 {
		t.Fatalf("result %+v err %v: want one delete then Canceled", res, err)
	}
}

func TestRunReactsToKick(t *testing.T) {
	d := &fakeDeleter{}
	e, _ := newTest(t, Options{MaxBytes: 100, Interval: time.Hour}, d)
	passes := make(chan Result, 16)
	e.onPass = func(r Result) { passes <- r }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	if r := <-passes; r.Blobs != 0 {
		t.Fatalf("start-up pass evicted %+v", r)
	}
	addN(e, "k", 10, 10) // crosses high: Add kicks
	if r := <-passes; r.Blobs != 2 || r.Remaining != 80 {
		t.Fatalf("kicked pass %+v, want down to low (85)", r)
	}
	e.Kick()
	if r := <-passes; r.Blobs != 0 {
		t.Fatalf("explicit kick pass %+v", r)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v, want nil on shutdown", err)
	}
}

// TestConcurrent runs the hit path, fills, holds, pins and passes together
// under -race. The deleter asserts, at the moment of deletion, that the key
// is neither held nor pinned.
func TestConcurrent(t *testing.T) {
	const keys = 400
	pinned := func(k int) bool { return k%17 == 0 }
	d := &fakeDeleter{}
	var e *Evictor
	d.before = func(key string) {
		e.mu.Lock()
		h := e.holds[key]
		e.mu.Unlock()
		if h != 0 {
			t.Errorf("Delete(%q) while held", key)
		}
		var k int
		fmt.Sscanf(key, "k%d", &k)
		if pinned(k) {
			t.Errorf("Delete(%q) of a pinned key", key)
		}
		if k%5 == 0 {
			e.Remove(key) // the cache reporting back
		}
	}
	e, _ = newTest(t, Options{MaxBytes: 50 * 100, Interval: time.Hour}, d)
	for k := range keys {
		if pinned(k) {
			e.SetPinned(fmt.Sprintf("k%d", k), true)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	runDone := make(chan error, 1)
	go func() { runDone <- e.Run(ctx) }()

	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 3000 {
				k := fmt.Sprintf("k%d", (i*7+g*13)%keys)
				switch i % 6 {
				case 0, 1:
					e.Add(Entry{Key: k, Size: int64(50 + i%100)})
				case 2:
					release := e.Hold(k)
					e.Add(Entry{Key: k, Size: 100})
					e.Touch(k, time.Now())
					release()
				case 3:
					if i%60 == 3 {
						e.Remove(k)
					}
					e.Touch(k, time.Now())
				default:
					e.Touch(k, time.Now())
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			if _, err := e.EvictNow(ctx); err != nil {
				t.Error(err)
			}
			_ = e.Stats()
		}
	})
	wg.Go(func() {
		for range 50 {
			_, _ = e.EnsureFree(ctx, 1000)
		}
	})
	wg.Wait()
	cancel()
	<-runDone
	if _, err := e.EvictNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	s := e.Stats()
	if s.Bytes > s.LowBytes && s.Bytes > s.PinnedBytes {
		t.Fatalf("after a final pass: %+v", s)
	}
	if s.EvictedBlobs == 0 {
		t.Fatal("nothing was evicted")
	}
}

// TestChangesWhileDeleting: pins, touches and failures that land while a
// pass has a key out of the list.
func TestChangesWhileDeleting(t *testing.T) {
	var e *Evictor
	d := DeleterFunc(func(key string) error {
		switch key {
		case "a": // pinned while its Delete runs: the pin outlives the blob
			e.SetPinned("a", true)
			return nil
		case "b": // touched while its Delete runs, then the Delete fails
			e.Touch("b", at(100))
			return errors.New("EIO")
		case "c": // b is parked now: pin it and unpin it again
			e.SetPinned("b", true)
			e.SetPinned("b", false)
			e.SetPinned("b", true)
			return nil
		}
		return nil
	})
	e, _ = newTest(t, Options{MaxBytes: 100, HighWatermark: 0.2, LowWatermark: 0.1}, d)
	for i, k := range []string{"a", "b", "c", "d", "x"} {
		e.Add(Entry{Key: k, Size: 10, LastAccess: at(i)})
	}
	e.SetPinned("x", true) // pin an existing, listed entry
	res, err := e.EvictNow(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// a deleted, b failed (parked, then pinned), c deleted, d deleted; left:
	// b and x, both pinned: 20 > low 10, so the pass is stuck.
	if res.Blobs != 3 || res.Failed != 1 || res.Remaining != 20 || !e.Stats().Stuck {
		t.Fatalf("result %+v stats %+v", res, e.Stats())
	}
	if s := e.Stats(); s.PinnedBlobs != 2 {
		t.Fatalf("stats %+v: want b and x pinned", s)
	}
	e.Add(Entry{Key: "a", Size: 10})
	if s := e.Stats(); s.PinnedBlobs != 3 {
		t.Fatalf("re-added a not pinned: %+v", s)
	}
	// Unpin b (touched at 100) and x (at 4): x rejoins behind b.
	e.Add(Entry{Key: "y", Size: 10, LastAccess: at(50)})
	e.SetPinned("b", false)
	e.SetPinned("x", false)
	e.SetPinned("a", false)
	e.mu.Lock()
	var order []string
	for i := e.arena.slots[0].next; i != 0; i = e.arena.slots[i].next {
		order = append(order, e.keyOf(i))
	}
	e.mu.Unlock()
	if want := []string{"a", "b", "y", "x"}; !slices.Equal(order, want) {
		t.Fatalf("MRU→LRU order %v, want %v", order, want)
	}
}
