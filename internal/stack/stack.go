package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/eviction"
)

// NoBudget stands for "no byte budget": eviction then only keeps min_free.
const NoBudget = int64(1) << 62

// Options configure a Stack. Main builds them from the config; the zero
// value of each field is the component's default.
type Options struct {
	// Dir is the data dir.
	Dir string
	// MaxSize is the byte budget as configured (cache.max_size): "" or "0"
	// for none, a size ("200GiB") or a share of the filesystem ("80%"),
	// which is why it is resolved here, next to the filesystem.
	MaxSize string
	// HighWatermark and LowWatermark are eviction's (0: its defaults).
	HighWatermark, LowWatermark float64
	// MinFree is the free space eviction keeps on the filesystem.
	MinFree int64
	// MinFreeIsDefault says MinFree was not chosen by the operator: on a
	// small filesystem it is then capped at eviction.MinFreeShare instead
	// of only warned about.
	MinFreeIsDefault bool
	// EvictInterval is how often eviction checks (0: its default).
	EvictInterval time.Duration
	// ScrubInterval, ScrubRate and ScrubTrigger are the cache's scrubber
	// (see cache.Options).
	ScrubInterval time.Duration
	ScrubRate     int64
	ScrubTrigger  <-chan time.Time
	// Background loads eviction's view of the cache after Open returns
	// (serve: a large cache serves at once); else Open loads it first.
	Background bool
	Logger     *slog.Logger
}

// Stack is the cache with its eviction and management operations, wired.
type Stack struct {
	Store   *cache.Store
	Evictor *eviction.Evictor
	Ops     *admin.Local
	// ready is set once the index is open and reconciled (and, unless
	// loaded in the background, eviction's view loaded).
	ready atomic.Bool
	// loaded is closed once eviction's view of the cache is loaded (or
	// failed to load). The eviction loop waits for it.
	loaded chan struct{}
}

// Open opens the data dir, loads eviction's view of it (one walk, the only
// full scan) and applies the budget. It fails with an error wrapping
// cache.ErrBusy when a server holds the data dir.
func Open(o Options) (*Stack, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	store, err := cache.Open(cache.Options{Dir: o.Dir, Logger: o.Logger,
		ScrubInterval: o.ScrubInterval, ScrubRate: o.ScrubRate, ScrubTrigger: o.ScrubTrigger})
	if err != nil {
		return nil, err
	}
	st := &Stack{Store: store, loaded: make(chan struct{})}
	if err := st.startEviction(o); err != nil {
		store.Close()
		return nil, err
	}
	return st, nil
}

func (st *Stack) startEviction(o Options) error {
	log, dir := o.Logger, o.Dir
	freeSpace := func() (int64, error) { free, _, err := diskSpace(dir); return free, err }
	_, total, err := diskSpace(dir)
	if err != nil {
		return fmt.Errorf("data_dir %s: %w", dir, err)
	}
	budget, err := parseBudget(o.MaxSize, total)
	if err != nil {
		return err
	}
	minFree := o.MinFree
	// The default adapts to small filesystems; a value the operator chose
	// is kept as given, with a warning when it cannot be sensible.
	if capped, ok := eviction.CapMinFree(minFree, total); ok {
		if o.MinFreeIsDefault {
			log.Warn("the default cache.min_free is more than 10% of the cache filesystem; keeping 10% free instead, so that eviction does not empty the cache",
				"min_free", humanize.IBytes(uint64(minFree)), "filesystem", humanize.IBytes(uint64(total)), "keeping_free", humanize.IBytes(uint64(capped)))
			minFree = capped
		} else {
			log.Warn("cache.min_free is more than 10% of the cache filesystem; eviction deletes whatever it must to keep it free",
				"min_free", humanize.IBytes(uint64(minFree)), "filesystem", humanize.IBytes(uint64(total)))
		}
	}
	if r := st.Store.IndexReserve(); minFree < r {
		// Downloads stop where the index's reserve begins: room below it
		// is none to eviction either, or it would make too little.
		minFree = r
	}
	st.Evictor, err = eviction.New(eviction.Options{
		MaxBytes:      budget,
		HighWatermark: o.HighWatermark,
		LowWatermark:  o.LowWatermark,
		MinFree:       minFree,
		FreeSpace:     freeSpace,
		IsNotFound:    func(err error) bool { return errors.Is(err, cache.ErrNotFound) },
		Interval:      o.EvictInterval,
		Logger:        log.With("component", "eviction"),
	}, eviction.DeleterFunc(func(key string) error { return st.Store.Delete(digest.Digest(key)) }))
	if err != nil {
		return err
	}
	if err := admin.DropStagingPins(st.Store, log); err != nil {
		return err
	}
	pinned, err := admin.PinnedDigests(st.Store)
	if err != nil {
		return err
	}
	// Pins first: a key pinned before it is loaded is pinned when it
	// arrives. Then the live events (Add, Touch, Remove), then the walk.
	for d := range pinned {
		st.Evictor.SetPinned(d.String(), true)
	}
	st.Store.Subscribe(evictionObserver{st.Evictor, st.Store})
	shown := budget
	if budget == NoBudget {
		shown = 0
	}
	st.Ops = &admin.Local{Store: st.Store, Evictor: st.Evictor, MaxBytes: shown, FreeSpace: freeSpace, Logger: log}
	if !o.Background {
		defer close(st.loaded)
		if err := st.loadEviction(); err != nil {
			return err
		}
		st.ready.Store(true)
		return nil
	}
	// The store is reconciled (or was closed cleanly), so it may serve
	// now; eviction learns about what it holds while it does. Blobs added
	// or touched meanwhile are told to the evictor live and merged (Load
	// is idempotent per key); one removed meanwhile may be loaded again
	// and is dropped when eviction's Delete finds it gone.
	st.ready.Store(true)
	go func() {
		defer close(st.loaded)
		start := time.Now()
		if err := st.loadEviction(); err != nil {
			if !errors.Is(err, cache.ErrClosed) {
				log.Error("loading the cache's blobs for eviction", "err", err)
			}
			return
		}
		// The walk's garbage is as large as what it loaded: give it back.
		debug.FreeOSMemory()
		_, n := st.Store.Usage()
		log.Info("eviction loaded the cache", "blobs", n, "took_s", time.Since(start).Round(time.Millisecond).Seconds())
	}()
	return nil
}

// parseBudget reads cache.max_size on a filesystem of total bytes:
// NoBudget for "" or "0".
func parseBudget(maxSize string, total int64) (int64, error) {
	if maxSize == "" || maxSize == "0" {
		return NoBudget, nil
	}
	return eviction.ParseBudget(maxSize, total)
}

// Budget is the byte budget maxSize (cache.max_size) gives a cache in dir,
// as Open would apply it; 0 for none.
func Budget(maxSize, dir string) (int64, error) {
	total := int64(0)
	if dir != "" {
		if _, t, err := diskSpace(dir); err == nil {
			total = t
		}
	}
	b, err := parseBudget(maxSize, total)
	if b == NoBudget {
		b = 0
	}
	return b, err
}

// loadEviction walks the index once and loads every blob into the evictor.
func (st *Stack) loadEviction() error {
	_, n := st.Store.Usage()
	entries := make([]eviction.Entry, 0, n)
	err := st.Store.Walk(func(info cache.BlobInfo) error {
		entries = append(entries, eviction.Entry{Key: string(info.Digest), Size: info.Size, LastAccess: info.LastAccess})
		return nil
	})
	if err != nil {
		return err
	}
	st.Evictor.Load(entries)
	return nil
}

// Ready says the index is open and reconciled: the cache may serve.
func (st *Stack) Ready() bool { return st.ready.Load() }

// Loaded is closed once eviction's view of the cache is loaded (or failed
// to load).
func (st *Stack) Loaded() <-chan struct{} { return st.loaded }

// RunEviction runs the eviction loop until ctx ends, once eviction's view
// is loaded (passes need the whole picture).
func (st *Stack) RunEviction(ctx context.Context) error {
	select {
	case <-st.loaded:
	case <-ctx.Done():
		return nil
	}
	return st.Evictor.Run(ctx)
}

// Close closes the cache.
func (st *Stack) Close() error { return st.Store.Close() }

// FillHooks lets eviction protect fills and make room when the disk fills
// (the proxy's fill hooks).
type FillHooks struct{ Evictor *eviction.Evictor }

// Hold keeps d from eviction until the returned func is called.
func (h FillHooks) Hold(d digest.Digest) func() { return h.Evictor.Hold(d.String()) }

// CanFit is the proxy's cannot-fit question, answered by eviction before a
// fill writes a byte.
func (h FillHooks) CanFit(size int64) error { return h.Evictor.CanFit(size) }

// NoSpace evicts to make need bytes free; false when it cannot.
func (h FillHooks) NoSpace(ctx context.Context, need int64) bool {
	_, err := h.Evictor.EnsureFree(ctx, need)
	return err == nil
}

// evictionObserver tells the evictor what the cache does: eviction
// subscribes to the cache, never the other way round.
type evictionObserver struct {
	e     *eviction.Evictor
	store *cache.Store
}

func (o evictionObserver) BlobAdded(info cache.BlobInfo) {
	o.e.Add(eviction.Entry{Key: info.Digest.String(), Size: info.Size, LastAccess: info.LastAccess})
}

func (o evictionObserver) BlobAccessed(d digest.Digest, at time.Time) { o.e.Touch(d.String(), at) }

func (o evictionObserver) BlobRemoved(d digest.Digest) {
	o.e.RemoveUnless(d.String(), func() bool { _, err := o.store.Stat(d); return err == nil })
}
