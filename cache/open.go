package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	digest "github.com/opencontainers/go-digest"
)

// Opening and closing: the data dir is made private and locked, the
// clean-shutdown marker taken, the index opened, files and index brought
// into agreement (or the marker trusted), and the background loops
// started; Close undoes it in reverse and leaves the marker.

// Open opens (creating if needed) the store in opts.Dir, reconciles files
// and index, and starts the access-flush and value-log GC loops. If another
// Store or process holds the directory, the error wraps ErrBusy.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("cache: Options.Dir is required")
	}
	s := newStore(opts)
	if err := s.makeDirs(); err != nil {
		return nil, err
	}
	s.space = newSpaceGuard(s.tmpDir, s.indexDir(), opts.IndexReserve, s.log)
	lock, err := lockDir(s.dir)
	if err != nil {
		return nil, err
	}
	s.dirLock = lock
	// Before anything can change: a clean Close leaves a marker; take it
	// (removing it durably) so that a crash from now on leaves none.
	clean, trusted, err := s.takeCleanMarker()
	if err == nil {
		err = s.openIndex()
	}
	if err == nil {
		err = s.loadState(clean, trusted)
	}
	if err != nil {
		s.abandon()
		return nil, err
	}
	s.startLoops(opts)
	return s, nil
}

// newStore applies opts' defaults; it touches nothing on disk.
func newStore(opts Options) *Store {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Store{
		dir:        opts.Dir,
		blobDir:    filepath.Join(opts.Dir, "blobs", "sha256"),
		tmpDir:     filepath.Join(opts.Dir, "tmp"),
		log:        log.With("component", "cache"),
		flushEvery: opts.AccessFlushInterval,
		flushTick:  opts.AccessFlushTrigger,
		gcEvery:    opts.ValueLogGCInterval,
		pending:    make(map[digest.Digest]time.Time),
		stop:       make(chan struct{}),
		scrubRate:  opts.ScrubRate,
		now:        time.Now,
		walkPage:   walkPage,
	}
	if s.flushEvery <= 0 {
		s.flushEvery = DefaultAccessFlushInterval
	}
	if s.gcEvery <= 0 {
		s.gcEvery = DefaultValueLogGCInterval
	}
	if s.scrubRate <= 0 {
		s.scrubRate = DefaultScrubRate
	}
	return s
}

func (s *Store) indexDir() string { return filepath.Join(s.dir, "index") }

// makeDirs makes the data dir private (see private.go) and creates blobs/,
// tmp/ and index/ in it.
func (s *Store) makeDirs() error {
	if err := makePrivate(s.dir, s.log); err != nil {
		return fmt.Errorf("cache: data dir %s: %w", s.dir, classify(err))
	}
	for _, d := range []string{s.blobDir, s.tmpDir, s.indexDir()} {
		if err := os.MkdirAll(d, dirMode); err != nil {
			return fmt.Errorf("cache: create %s: %w", d, classify(err))
		}
	}
	return nil
}

// openIndex opens Badger in index/ (see index.go for its options).
func (s *Store) openIndex() error {
	dir := s.indexDir()
	db, err := badger.Open(badgerOptions(dir, s.log))
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return fmt.Errorf("cache: index %s is locked by another process: %w", dir, ErrBusy)
		}
		return fmt.Errorf("cache: open index %s: %w", dir, classify(err))
	}
	s.db = db
	return nil
}

// loadState brings files and index into agreement and loads the usage
// totals (from a trusted clean-shutdown marker, or by the full reconcile),
// then moves records an older version laid out differently.
func (s *Store) loadState(clean cleanState, trusted bool) error {
	var err error
	if trusted {
		err = s.trustClean(clean)
	} else {
		err = s.reconcile()
	}
	if err != nil {
		return err
	}
	if err := s.migrateReferrers(); err != nil {
		return fmt.Errorf("cache: moving kept referrers answers: %w", err)
	}
	return nil
}

// abandon releases what a failed Open had taken.
func (s *Store) abandon() {
	if s.db != nil {
		s.db.Close()
	}
	s.dirLock.Close()
}

// startLoops starts the access flush, the value-log GC and, if asked for,
// the scrub.
func (s *Store) startLoops(opts Options) {
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.loops.Add(2)
	go s.flushLoop()
	go s.gcLoop()
	trigger := opts.ScrubTrigger
	if trigger == nil && opts.ScrubInterval > 0 {
		t := time.NewTicker(opts.ScrubInterval)
		trigger = t.C
		s.stopTicker = t.Stop
	}
	if trigger != nil {
		s.loops.Add(1)
		go s.scrubLoop(trigger)
	}
}

// Close flushes access times, stops the background loops and closes the
// index; if all of that succeeded, and no blob file was left without a
// record during the run (a removal or an index write that failed), it then
// writes the clean-shutdown marker (see clean.go), so the next Open can
// skip the full reconcile. It is idempotent; later calls return the first
// call's result.
// Writers still open are abandoned; their temp files are removed at the
// next Open.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.cancel()
		s.loops.Wait()
		if s.stopTicker != nil {
			s.stopTicker()
		}
		s.closeMu.Lock()
		defer s.closeMu.Unlock()
		s.closed = true
		ferr := s.flushAccess()
		if ferr != nil {
			s.log.Warn("flushing access times at close", "err", ferr)
		}
		derr := s.db.Close()
		var merr error
		switch {
		case ferr != nil || derr != nil:
		case s.dirty.Load():
			s.log.Warn("not writing the clean-shutdown marker: a blob file may be left without a record; the next start reconciles")
		default:
			// Index and files agree: the next Open may skip the reconcile.
			if merr = s.putCleanMarker(); merr != nil {
				merr = fmt.Errorf("cache: write clean-shutdown marker: %w", merr)
			}
		}
		lerr := s.dirLock.Close()
		s.closeErr = errors.Join(ferr, derr, merr, lerr)
	})
	return s.closeErr
}
