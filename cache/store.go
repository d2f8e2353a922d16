package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	digest "github.com/opencontainers/go-digest"
)

// Defaults for Options.
const (
	DefaultAccessFlushInterval = 5 * time.Second
	DefaultValueLogGCInterval  = 10 * time.Minute
)

// defaultMediaType is recorded for blobs re-indexed by reconcile, whose media
// type was never written down.
const defaultMediaType = "application/octet-stream"

// Options configure a Store. Only Dir is required.
type Options struct {
	// Dir is the data directory; it is created if missing.
	Dir string
	// Logger receives the Store's logs and Badger's warnings and errors.
	// Nil means slog.Default().
	Logger *slog.Logger
	// AccessFlushInterval is how often in-memory last-access times are
	// written to Badger, in one transaction. Default 5s.
	AccessFlushInterval time.Duration
	// ValueLogGCInterval is how often Badger's value-log GC runs
	// (RunValueLogGC(0.5) until there is nothing to rewrite). Default 10m.
	ValueLogGCInterval time.Duration
	// ScrubInterval is how often the background scrub re-hashes every
	// blob (see VerifyAll), so that a file damaged on disk is found and
	// fetched again instead of served. 0: no scrub (the default).
	ScrubInterval time.Duration
	// ScrubRate bounds the scrub's reading, in bytes per second. Default
	// DefaultScrubRate.
	ScrubRate int64
	// ScrubTrigger, if not nil, starts a scrub pass whenever it delivers,
	// instead of a ticker of ScrubInterval (tests drive the scrub with it).
	ScrubTrigger <-chan time.Time
}

// BlobInfo describes one indexed blob.
type BlobInfo struct {
	Digest     digest.Digest
	Size       int64
	MediaType  string
	Created    time.Time
	LastAccess time.Time
}

// TagRecord is what the cache remembers about a tag.
type TagRecord struct {
	Digest    digest.Digest
	MediaType string
	CheckedAt time.Time // when upstream last confirmed this tag
}

// Store is the content-addressed blob store and its index. It is safe for
// concurrent use.
type Store struct {
	dir     string
	blobDir string // dir/blobs/sha256
	tmpDir  string
	log     *slog.Logger
	obs     observers // see Subscribe
	db      *badger.DB
	dirLock io.Closer

	flushEvery time.Duration
	gcEvery    time.Duration

	// closeMu is held for reading by every operation that touches the
	// index, and for writing by Close, so that Badger is never used after
	// it is closed. It is never held while calling out (Observer, Walk's fn).
	closeMu sync.RWMutex
	closed  bool

	// stripes serialise index-and-file changes (Commit, Delete, SetMediaType,
	// dropping a stale record) per digest, keyed by its first hex byte.
	stripes [256]sync.Mutex

	accessMu sync.Mutex
	pending  map[digest.Digest]time.Time // accesses not yet flushed
	inflight map[digest.Digest]time.Time // accesses being flushed now

	usedBytes atomic.Int64
	usedBlobs atomic.Int64

	scrubRate   int64
	verifyStats verifyCounters

	stop       chan struct{}
	ctx        context.Context // ends at Close: stops a scrub pass
	cancel     context.CancelFunc
	stopTicker func()
	loops      sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error

	// Test hooks.
	now         func() time.Time
	writeHook   func(f *os.File, p []byte) (int, error) // nil = f.Write
	indexWrites atomic.Int64                            // Badger write transactions started
	walkPage    int
}

// Open opens (creating if needed) the store in opts.Dir, reconciles files
// and index, and starts the access-flush and value-log GC loops. If another
// Store or process holds the directory, the error wraps ErrBusy.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("cache: Options.Dir is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "cache")
	s := &Store{
		dir:        opts.Dir,
		blobDir:    filepath.Join(opts.Dir, "blobs", "sha256"),
		tmpDir:     filepath.Join(opts.Dir, "tmp"),
		log:        log,
		flushEvery: opts.AccessFlushInterval,
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
	indexDir := filepath.Join(opts.Dir, "index")
	if err := makePrivate(opts.Dir, log); err != nil {
		return nil, fmt.Errorf("cache: data dir %s: %w", opts.Dir, classify(err))
	}
	for _, d := range []string{s.blobDir, s.tmpDir, indexDir} {
		if err := os.MkdirAll(d, dirMode); err != nil {
			return nil, fmt.Errorf("cache: create %s: %w", d, classify(err))
		}
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	s.dirLock = lock

	// Before anything can change: a clean Close leaves a marker; take it
	// (removing it durably) so that a crash from now on leaves none.
	clean, trusted, err := s.takeCleanMarker()
	if err != nil {
		lock.Close()
		return nil, err
	}

	bopts := badger.DefaultOptions(indexDir).
		WithLogger(badgerLogger{log.With("component", "badger")}).
		WithLoggingLevel(badger.WARNING).
		// Commit's crash-safety argument relies on the index record being
		// durable once Commit returns; index writes are rare next to the
		// blob fsyncs they follow.
		WithSyncWrites(true).
		// The index is small: records are tens of bytes. Keep Badger's
		// memory and preallocated files modest.
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(16 << 20).
		WithCompression(options.None).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		WithMetricsEnabled(false)
	db, err := badger.Open(bopts)
	if err != nil {
		lock.Close()
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("cache: index %s is locked by another process: %w", indexDir, ErrBusy)
		}
		return nil, fmt.Errorf("cache: open index %s: %w", indexDir, classify(err))
	}
	s.db = db

	if trusted {
		err = s.trustClean(clean)
	} else {
		err = s.reconcile()
	}
	if err != nil {
		db.Close()
		lock.Close()
		return nil, err
	}

	s.ctx, s.cancel = context.WithCancel(context.Background())
	if s.scrubRate <= 0 {
		s.scrubRate = DefaultScrubRate
	}
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
	return s, nil
}

// Close flushes access times, stops the background loops and closes the
// index; if all of that succeeded it then writes the clean-shutdown marker
// (see clean.go), so the next Open can skip the full reconcile. It is idempotent; later calls return the first call's result.
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
		if ferr == nil && derr == nil {
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

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// rlock takes closeMu for reading and fails if the Store is closed. The
// caller must call s.closeMu.RUnlock when it returns nil.
func (s *Store) rlock() error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (s *Store) stripe(hex string) *sync.Mutex {
	return &s.stripes[unhex(hex[0])<<4|unhex(hex[1])]
}

func unhex(c byte) int {
	if c <= '9' {
		return int(c - '0')
	}
	return int(c-'a') + 10
}

// blobPath must be given hex returned by validateDigest.
func (s *Store) blobPath(hex string) string {
	return filepath.Join(s.blobDir, hex[:2], hex)
}

// update runs fn in a read-write transaction, retrying on conflicts with
// concurrent transactions (the access flush touches the same keys).
func (s *Store) update(fn func(txn *badger.Txn) error) error {
	for i := 0; ; i++ {
		s.indexWrites.Add(1)
		err := s.db.Update(fn)
		if errors.Is(err, badger.ErrConflict) && i < 10 {
			continue
		}
		return classify(err)
	}
}

// blobInTxn reads d's record inside txn; a missing one is
// badger.ErrKeyNotFound.
func blobInTxn(txn *badger.Txn, d digest.Digest) (blobRecord, error) {
	item, err := txn.Get(blobKey(d))
	if err != nil {
		return blobRecord{}, err
	}
	var rec blobRecord
	err = item.Value(func(v []byte) error {
		rec, err = decodeBlob(v)
		return err
	})
	return rec, err
}

// getBlob reads the stored record (without in-memory access times).
func (s *Store) getBlob(d digest.Digest) (blobRecord, error) {
	var rec blobRecord
	err := s.db.View(func(txn *badger.Txn) (err error) {
		rec, err = blobInTxn(txn, d)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return rec, fmt.Errorf("%w: blob %s", ErrNotFound, d)
	}
	if err != nil {
		return rec, fmt.Errorf("cache: read blob record %s: %w", d, err)
	}
	return rec, nil
}

// withAccess returns info with LastAccess raised to the newest unflushed
// access.
func (s *Store) withAccess(info BlobInfo) BlobInfo {
	s.accessMu.Lock()
	if t, ok := s.pending[info.Digest]; ok && t.After(info.LastAccess) {
		info.LastAccess = t
	}
	if t, ok := s.inflight[info.Digest]; ok && t.After(info.LastAccess) {
		info.LastAccess = t
	}
	s.accessMu.Unlock()
	return info
}

// recordAccess notes an access in memory and tells the observers.
func (s *Store) recordAccess(d digest.Digest) time.Time {
	now := s.now().Round(0) // stored without a monotonic reading; return the same
	s.accessMu.Lock()
	if t, ok := s.pending[d]; !ok || now.After(t) {
		s.pending[d] = now
	}
	s.accessMu.Unlock()
	s.obs.accessed(d, now)
	return now
}

// Stat returns the indexed information about d. It writes nothing.
func (s *Store) Stat(d digest.Digest) (BlobInfo, error) {
	if _, err := validateDigest(d); err != nil {
		return BlobInfo{}, err
	}
	if err := s.rlock(); err != nil {
		return BlobInfo{}, err
	}
	rec, err := s.getBlob(d)
	s.closeMu.RUnlock()
	if err != nil {
		return BlobInfo{}, err
	}
	return s.withAccess(rec.info(d)), nil
}

// Open opens the blob file read-only and records the access in memory. If
// the index lists d but the file is gone (or has another size), the record
// is dropped and the error wraps ErrNotFound.
func (s *Store) Open(d digest.Digest) (*os.File, BlobInfo, error) {
	hex, err := validateDigest(d)
	if err != nil {
		return nil, BlobInfo{}, err
	}
	if err := s.rlock(); err != nil {
		return nil, BlobInfo{}, err
	}
	rec, err := s.getBlob(d)
	s.closeMu.RUnlock()
	if err != nil {
		return nil, BlobInfo{}, err
	}
	f, err := os.Open(s.blobPath(hex))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			s.dropStale(d, hex, "file missing")
			return nil, BlobInfo{}, fmt.Errorf("%w: blob %s (file missing)", ErrNotFound, d)
		}
		return nil, BlobInfo{}, fmt.Errorf("cache: open blob %s: %w", d, err)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != rec.size {
		f.Close()
		s.dropStale(d, hex, "file size differs from index")
		return nil, BlobInfo{}, fmt.Errorf("%w: blob %s (file damaged)", ErrNotFound, d)
	}
	info := s.withAccess(rec.info(d))
	info.LastAccess = s.recordAccess(d)
	return f, info, nil
}

// Touch records an access to d in memory only.
func (s *Store) Touch(d digest.Digest) {
	if _, err := validateDigest(d); err != nil {
		return
	}
	s.recordAccess(d)
}

// ReadAll returns the whole content of a small blob (a manifest), after
// checking it against its digest. A blob larger than max is not read: the
// error wraps ErrTooLarge. Content that no longer matches its digest is
// removed and reported as ErrNotFound, so the caller fetches it again.
func (s *Store) ReadAll(d digest.Digest, max int64) ([]byte, BlobInfo, error) {
	info, err := s.Stat(d)
	if err != nil {
		return nil, BlobInfo{}, err
	}
	if info.Size > max {
		return nil, info, fmt.Errorf("%w: blob %s is %d bytes, limit %d", ErrTooLarge, d, info.Size, max)
	}
	f, info, err := s.Open(d)
	if err != nil {
		return nil, BlobInfo{}, err
	}
	defer f.Close()
	data := make([]byte, info.Size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, BlobInfo{}, fmt.Errorf("cache: read blob %s: %w", d, err)
	}
	if sha256Hex(data) != d.Encoded() {
		if fi, err := f.Stat(); err == nil {
			s.dropCorrupt(d, d.Encoded(), fi)
		}
		return nil, BlobInfo{}, fmt.Errorf("%w: blob %s (corrupt content removed)", ErrNotFound, d)
	}
	return data, info, nil
}

// Put verifies and stores small content (a manifest). If d is already
// stored, it returns the existing information without writing.
func (s *Store) Put(d digest.Digest, mediaType string, data []byte) (BlobInfo, error) {
	hex, err := validateDigest(d)
	if err != nil {
		return BlobInfo{}, err
	}
	if info, err := s.Stat(d); err == nil {
		if fi, err := os.Stat(s.blobPath(hex)); err == nil && fi.Size() == info.Size {
			return info, nil
		}
	}
	w, err := s.Create(d, mediaType)
	if err != nil {
		return BlobInfo{}, err
	}
	if _, err := w.Write(data); err != nil {
		w.Cancel()
		return BlobInfo{}, err
	}
	return w.Commit(int64(len(data)))
}

// dropStale removes the record for d if its file is (still) missing or of
// the wrong size. The file, if any, is removed as well.
func (s *Store) dropStale(d digest.Digest, hex, why string) {
	if err := s.rlock(); err != nil {
		return
	}
	mu := s.stripe(hex)
	mu.Lock()
	rec, err := s.getBlob(d)
	if err != nil {
		mu.Unlock()
		s.closeMu.RUnlock()
		return
	}
	path := s.blobPath(hex)
	if fi, err := os.Stat(path); err == nil && fi.Size() == rec.size {
		mu.Unlock() // repaired meanwhile by a Commit
		s.closeMu.RUnlock()
		return
	}
	err = s.update(func(txn *badger.Txn) error { return txn.Delete(blobKey(d)) })
	if err == nil {
		os.Remove(path)
		s.usedBytes.Add(-rec.size)
		s.usedBlobs.Add(-1)
	}
	mu.Unlock()
	s.closeMu.RUnlock()
	if err != nil {
		s.log.Error("dropping stale blob record", "digest", d, "err", err)
		return
	}
	s.forgetAccess(d)
	s.log.Warn("dropped blob record", "digest", d, "reason", why)
	s.obs.removed(d)
}

func (s *Store) forgetAccess(d digest.Digest) {
	s.accessMu.Lock()
	delete(s.pending, d)
	s.accessMu.Unlock()
}

// Delete removes the index record and then the file. Readers holding the
// file open keep reading it. The error wraps ErrNotFound if d is absent.
func (s *Store) Delete(d digest.Digest) error {
	hex, err := validateDigest(d)
	if err != nil {
		return err
	}
	if err := s.rlock(); err != nil {
		return err
	}
	mu := s.stripe(hex)
	mu.Lock()
	rec, err := s.getBlob(d)
	if err == nil {
		err = s.update(func(txn *badger.Txn) error { return txn.Delete(blobKey(d)) })
		if err == nil {
			s.usedBytes.Add(-rec.size)
			s.usedBlobs.Add(-1)
			if rerr := os.Remove(s.blobPath(hex)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				// The record is gone; reconcile re-indexes or removes the
				// file at the next start.
				s.log.Warn("removing blob file", "digest", d, "err", rerr)
			}
		}
	}
	mu.Unlock()
	s.closeMu.RUnlock()
	if err != nil {
		return err
	}
	s.forgetAccess(d)
	s.obs.removed(d)
	return nil
}

// walkPage bounds how many records Walk reads per index transaction; fn is
// called between transactions, without locks, so it may call Delete.
const walkPage = 1024

// Walk calls fn for every indexed blob, in digest order, until fn returns an
// error, which Walk returns. Blobs added or removed during the walk may or
// may not be seen.
func (s *Store) Walk(fn func(BlobInfo) error) error {
	var after []byte
	for {
		if err := s.rlock(); err != nil {
			return err
		}
		var page []BlobInfo
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: blobPrefix(), PrefetchValues: true, PrefetchSize: 100})
			defer it.Close()
			if after == nil {
				it.Rewind()
			} else {
				it.Seek(after)
				if it.Valid() && bytes.Equal(it.Item().Key(), after) {
					it.Next()
				}
			}
			for ; it.Valid() && len(page) < s.walkPage; it.Next() {
				item := it.Item()
				d := digest.Digest(item.Key()[2:])
				after = item.KeyCopy(after[:0])
				err := item.Value(func(v []byte) error {
					rec, err := decodeBlob(v)
					if err != nil {
						s.log.Warn("skipping corrupt blob record", "key", string(d))
						return nil
					}
					page = append(page, rec.info(d))
					return nil
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
		s.closeMu.RUnlock()
		if err != nil {
			return fmt.Errorf("cache: walk index: %w", err)
		}
		for _, info := range page {
			if err := fn(s.withAccess(info)); err != nil {
				return err
			}
		}
		if len(page) < s.walkPage {
			return nil
		}
	}
}

// Usage returns the total size and number of indexed blobs. O(1).
func (s *Store) Usage() (bytes int64, blobs int) {
	return s.usedBytes.Load(), int(s.usedBlobs.Load())
}

// flushLoop writes access times every flushEvery until Close.
func (s *Store) flushLoop() {
	defer s.loops.Done()
	t := time.NewTicker(s.flushEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return // Close flushes once more
		case <-t.C:
			if err := s.rlock(); err != nil {
				return
			}
			err := s.flushAccess()
			s.closeMu.RUnlock()
			if err != nil {
				s.log.Warn("flushing access times", "err", err)
			}
		}
	}
}

// flushChunk bounds one access-flush transaction, well under Badger's
// transaction size limit.
const flushChunk = 2048

// flushAccess writes pending access times to the index. The caller holds
// closeMu (read or write) and only one flush runs at a time (the flush loop,
// or Close after the loop has stopped).
func (s *Store) flushAccess() error {
	s.accessMu.Lock()
	batch := s.pending
	if len(batch) == 0 {
		s.accessMu.Unlock()
		return nil
	}
	s.pending = make(map[digest.Digest]time.Time)
	s.inflight = batch
	s.accessMu.Unlock()

	ds := make([]digest.Digest, 0, len(batch))
	for d := range batch {
		ds = append(ds, d)
	}
	var err error
	for len(ds) > 0 && err == nil {
		chunk := ds[:min(flushChunk, len(ds))]
		ds = ds[len(chunk):]
		err = s.update(func(txn *badger.Txn) error {
			for _, d := range chunk {
				rec, err := blobInTxn(txn, d)
				if errors.Is(err, badger.ErrKeyNotFound) || errors.Is(err, errCorrupt) {
					continue // deleted meanwhile, or for reconcile to handle
				}
				if err != nil {
					return err
				}
				if t := batch[d]; t.After(rec.lastAccess) {
					rec.lastAccess = t
					if err := txn.Set(blobKey(d), rec.encode()); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}

	s.accessMu.Lock()
	if err != nil {
		// Keep what was not written for the next flush.
		for d, t := range batch {
			if p, ok := s.pending[d]; !ok || t.After(p) {
				s.pending[d] = t
			}
		}
	}
	s.inflight = nil
	s.accessMu.Unlock()
	return err
}

// gcLoop runs Badger's value-log GC every gcEvery until Close.
func (s *Store) gcLoop() {
	defer s.loops.Done()
	t := time.NewTicker(s.gcEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		for n := 0; ; n++ {
			select {
			case <-s.stop:
				return
			default:
			}
			err := s.db.RunValueLogGC(0.5)
			if err == nil {
				continue
			}
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				s.log.Warn("index value-log GC", "err", err)
			} else if n > 0 {
				s.log.Debug("index value-log GC", "rewrites", n)
			}
			break
		}
	}
}

// badgerLogger adapts Badger's logger to slog. Badger is set to log at
// WARNING, so Infof and Debugf are rarely called.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Infof(f string, a ...any) {
	b.l.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Debugf(f string, a ...any) {
	b.l.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)))
}
