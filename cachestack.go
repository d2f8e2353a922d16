package main

import (
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

// noBudget stands for "no byte budget": eviction then only keeps min_free.
const noBudget = int64(1) << 62

// cacheStack is the cache with its eviction and management, as serve and
// the offline commands (gc, du, preload, import) all open it.
type cacheStack struct {
	store   *cache.Store
	evictor *eviction.Evictor
	ops     *admin.Local
	// ready is set once the index is open and reconciled (and, unless
	// loaded in the background, eviction's view loaded).
	ready atomic.Bool
	// loaded is closed once eviction's view of the cache is loaded (or
	// failed to load). The eviction loop waits for it.
	loaded chan struct{}
}

// openCacheStack opens the data dir, loads eviction's view of it (one walk,
// the only full scan) and applies the configured budget. It fails with an
// error wrapping cache.ErrBusy when a server holds the data dir.
func openCacheStack(cfg config, log *slog.Logger) (*cacheStack, error) {
	return openCacheStackWith(cfg, log, false)
}

// openCacheStackWith is openCacheStack; with background set (serve), the
// walk that loads eviction's view runs after it returns, so that a large
// cache serves at once: see startEviction.
func openCacheStackWith(cfg config, log *slog.Logger, background bool) (*cacheStack, error) {
	scrubRate, _ := parseRate(cfg.Cache.ScrubRate) // checked by finish
	store, err := cache.Open(cache.Options{Dir: cfg.DataDir, Logger: log,
		ScrubInterval: cfg.Cache.ScrubInterval.Duration, ScrubRate: scrubRate, ScrubTrigger: cfg.Cache.scrubTrigger})
	if err != nil {
		return nil, err
	}
	st := &cacheStack{store: store, loaded: make(chan struct{})}
	if err := st.startEviction(cfg, log, background); err != nil {
		store.Close()
		return nil, err
	}
	return st, nil
}

func (st *cacheStack) startEviction(cfg config, log *slog.Logger, background bool) error {
	dir := cfg.DataDir
	freeSpace := func() (int64, error) { free, _, err := diskSpace(dir); return free, err }
	_, total, err := diskSpace(dir)
	if err != nil {
		return fmt.Errorf("data_dir %s: %w", dir, err)
	}
	budget := noBudget
	if cfg.Cache.MaxSize != "" && cfg.Cache.MaxSize != "0" {
		if budget, err = eviction.ParseBudget(cfg.Cache.MaxSize, total); err != nil {
			return err
		}
	}
	minFree, err := eviction.ParseSize(cfg.Cache.MinFree)
	if err != nil {
		return fmt.Errorf("cache.min_free: %w", err)
	}
	// The default adapts to small filesystems; a value the operator chose
	// is kept as given, with a warning when it cannot be sensible.
	if capped, ok := eviction.CapMinFree(minFree, total); ok {
		if cfg.Cache.MinFree == defaultConfig().Cache.MinFree {
			log.Warn("the default cache.min_free is more than 10% of the cache filesystem; keeping 10% free instead, so that eviction does not empty the cache",
				"min_free", cfg.Cache.MinFree, "filesystem", humanize.IBytes(uint64(total)), "keeping_free", humanize.IBytes(uint64(capped)))
			minFree = capped
		} else {
			log.Warn("cache.min_free is more than 10% of the cache filesystem; eviction deletes whatever it must to keep it free",
				"min_free", cfg.Cache.MinFree, "filesystem", humanize.IBytes(uint64(total)))
		}
	}
	st.evictor, err = eviction.New(eviction.Options{
		MaxBytes:      budget,
		HighWatermark: cfg.Cache.HighWatermark,
		LowWatermark:  cfg.Cache.LowWatermark,
		MinFree:       minFree,
		FreeSpace:     freeSpace,
		IsNotFound:    func(err error) bool { return errors.Is(err, cache.ErrNotFound) },
		Interval:      cfg.Cache.EvictInterval.Duration,
		Logger:        log.With("component", "eviction"),
	}, eviction.DeleterFunc(func(key string) error { return st.store.Delete(digest.Digest(key)) }))
	if err != nil {
		return err
	}
	pinned, err := admin.PinnedDigests(st.store)
	if err != nil {
		return err
	}
	// Pins first: a key pinned before it is loaded is pinned when it
	// arrives. Then the live events (Add, Touch, Remove), then the walk.
	for d := range pinned {
		st.evictor.SetPinned(d.String(), true)
	}
	st.store.Subscribe(evictionObserver{st.evictor})
	shown := budget
	if budget == noBudget {
		shown = 0
	}
	st.ops = &admin.Local{Store: st.store, Evictor: st.evictor, MaxBytes: shown, FreeSpace: freeSpace, Logger: log}
	if !background {
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
		_, n := st.store.Usage()
		log.Info("eviction loaded the cache", "blobs", n, "took", time.Since(start).Round(time.Millisecond))
	}()
	return nil
}

// loadEviction walks the index once and loads every blob into the evictor.
func (st *cacheStack) loadEviction() error {
	_, n := st.store.Usage()
	entries := make([]eviction.Entry, 0, n)
	err := st.store.Walk(func(info cache.BlobInfo) error {
		entries = append(entries, eviction.Entry{Key: string(info.Digest), Size: info.Size, LastAccess: info.LastAccess})
		return nil
	})
	if err != nil {
		return err
	}
	st.evictor.Load(entries)
	return nil
}

func (st *cacheStack) Close() error { return st.store.Close() }

// evictionObserver tells the evictor what the cache does.
type evictionObserver struct{ e *eviction.Evictor }

func (o evictionObserver) BlobAdded(info cache.BlobInfo) {
	o.e.Add(eviction.Entry{Key: info.Digest.String(), Size: info.Size, LastAccess: info.LastAccess})
}

func (o evictionObserver) BlobAccessed(d digest.Digest, at time.Time) { o.e.Touch(d.String(), at) }

func (o evictionObserver) BlobRemoved(d digest.Digest) { o.e.Remove(d.String()) }
