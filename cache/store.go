package cache

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
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
	// AccessFlushTrigger, if not nil, flushes access times whenever it
	// delivers, instead of a ticker of AccessFlushInterval (tests drive the
	// flush with it).
	AccessFlushTrigger <-chan time.Time
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
	// IndexReserve is the free space, in bytes, that blob writes leave on
	// the data dir's filesystem for the index: a Writer's Create or Write
	// that would go below it fails with ErrNoSpace. Badger writes through
	// mmapped files, and a full filesystem kills the process there (SIGBUS)
	// instead of failing the write. 0 means DefaultIndexReserve, or half
	// the filesystem if that is less (logged); a positive value is kept as
	// given; a negative value turns the check off. Linux only.
	IndexReserve int64
}

// BlobInfo describes one indexed blob.
type BlobInfo struct {
	Digest     digest.Digest
	Size       int64
	MediaType  string
	Created    time.Time
	LastAccess time.Time
	// Scoped is set on the BlobAdded event of content fetched for a
	// registry whose content is scoped per repository (a private registry:
	// Writer.Scope, PutScoped), so that an observer that shares content
	// beyond this cache (the S3 tier) leaves it out. It is not stored:
	// every other BlobInfo has it false.
	Scoped bool
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
	flushTick  <-chan time.Time // Options.AccessFlushTrigger
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

	// dirty: a blob file may have been left in blobs/ without a record
	// (its removal or its index write failed). Close then writes no
	// clean-shutdown marker, so that the next Open reconciles.
	dirty atomic.Bool

	space *spaceGuard // the index's reserve; nil: unchecked

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
	flushHook   func() error                            // before each access-flush chunk; an error fails it
	indexWrites atomic.Int64                            // Badger write transactions started
	walkPage    int
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

// Usage returns the total size and number of indexed blobs. O(1).
func (s *Store) Usage() (bytes int64, blobs int) {
	return s.usedBytes.Load(), int(s.usedBlobs.Load())
}

// leftFile records that a blob file may now be in blobs/ without a record,
// which only the startup reconcile finds (to index it again or remove it):
// the next Open must not skip it.
func (s *Store) leftFile(msg string, args ...any) {
	s.dirty.Store(true)
	s.log.Warn(msg+"; the next start reconciles", args...)
}
