package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	badger "github.com/dgraph-io/badger/v4"
	digest "github.com/opencontainers/go-digest"
)

type writerState int

const (
	writerOpen writerState = iota
	writerCommitted
	writerCancelled
)

// Writer receives the content of one blob into a temp file, hashing it as it
// is written. Write, Commit and Cancel belong to one goroutine; Written and
// OpenReader may be called concurrently from others (the followers of a
// download in progress).
type Writer struct {
	s         *Store
	d         digest.Digest
	hex       string
	mediaType string
	f         *os.File
	h         hash.Hash
	written   atomic.Int64
	err       error // sticky write error; writer goroutine only

	mu    sync.Mutex // guards state and path against OpenReader
	state writerState
	path  string // temp path; the blob path once committed
	info  BlobInfo

	scoped bool // Scope
}

// Create starts writing the blob d under tmp/. The caller must end with
// Commit or Cancel. If the data dir's free space is already down to
// Options.IndexReserve, the error wraps ErrNoSpace.
func (s *Store) Create(d digest.Digest, mediaType string) (*Writer, error) {
	hex, err := validateDigest(d)
	if err != nil {
		return nil, err
	}
	if err := s.rlock(); err != nil {
		return nil, err
	}
	s.closeMu.RUnlock()
	if err := s.space.take(0); err != nil {
		return nil, fmt.Errorf("cache: create blob %s: %w", d, err)
	}
	f, err := os.CreateTemp(s.tmpDir, "sha256-"+hex[:16]+"-*")
	if err != nil {
		return nil, fmt.Errorf("cache: create temp file: %w", classify(err))
	}
	return &Writer{s: s, d: d, hex: hex, mediaType: mediaType, f: f, h: sha256.New(), path: f.Name()}, nil
}

// Write appends p to the temp file and the running hash. A full disk, or
// one whose free space is down to Options.IndexReserve, yields an error
// wrapping ErrNoSpace, after which the writer remains usable. After any
// other error every later Write and Commit fail with it.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.state != writerOpen {
		return 0, fmt.Errorf("%w: writer for %s already finished", ErrClosed, w.d)
	}
	var n int
	var err error
	if err = w.s.space.take(int64(len(p))); err != nil {
		// Nothing written: p may be written again once space is freed.
		return 0, fmt.Errorf("cache: write blob %s: %w", w.d, err)
	}
	if w.s.writeHook != nil {
		n, err = w.s.writeHook(w.f, p)
	} else {
		n, err = w.f.Write(p)
	}
	if n > 0 {
		w.h.Write(p[:n])
		w.written.Add(int64(n))
	}
	if err != nil {
		err = fmt.Errorf("cache: write blob %s: %w", w.d, classify(err))
		// A full disk is not the writer's fault: the n bytes written are
		// hashed and counted, so once space is freed the caller may write
		// the rest (p[n:]) and go on.
		if !errors.Is(err, ErrNoSpace) {
			w.err = err
		}
		return n, err
	}
	return n, nil
}

// Written returns the number of bytes written so far.
func (w *Writer) Written() int64 { return w.written.Load() }

// OpenReader opens a new read-only descriptor on the content being written.
// The descriptor keeps working after Commit renames the file and after
// Cancel unlinks it; it sees at least Written() bytes. After Commit it opens
// the committed blob; after Cancel or a failed Commit it fails with ErrClosed.
func (w *Writer) OpenReader() (*os.File, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state == writerCancelled {
		return nil, fmt.Errorf("%w: writer for %s was cancelled", ErrClosed, w.d)
	}
	f, err := os.Open(w.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: blob %s", ErrNotFound, w.d)
	}
	return f, err
}

// discard closes and removes the temp file and marks the writer cancelled.
func (w *Writer) discard() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != writerOpen {
		return
	}
	w.f.Close()
	if err := os.Remove(w.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		w.s.log.Warn("removing temp file", "path", w.path, "err", err)
	}
	w.state = writerCancelled
}

// Commit verifies the content against the digest and, if expectedSize >= 0,
// the size. On a mismatch the temp file is removed, nothing is indexed, and
// the error wraps ErrDigestMismatch or ErrSizeMismatch. On a match the file
// is synced, renamed into blobs/, the directory synced, the record written
// and the observers told. If the digest is already stored, the temp file is
// dropped and the existing information returned, so two writers of one
// digest both succeed. Calling Commit again returns the same result.
func (w *Writer) Commit(expectedSize int64) (BlobInfo, error) {
	switch w.state {
	case writerCommitted:
		return w.info, nil
	case writerCancelled:
		return BlobInfo{}, fmt.Errorf("%w: writer for %s was cancelled", ErrClosed, w.d)
	}
	if w.err != nil {
		w.discard()
		return BlobInfo{}, w.err
	}
	size := w.written.Load()
	if expectedSize >= 0 && size != expectedSize {
		w.discard()
		return BlobInfo{}, fmt.Errorf("%w: blob %s: got %d bytes, expected %d", ErrSizeMismatch, w.d, size, expectedSize)
	}
	if got := hex.EncodeToString(w.h.Sum(nil)); got != w.hex {
		w.discard()
		return BlobInfo{}, fmt.Errorf("%w: expected %s, content is sha256:%s", ErrDigestMismatch, w.d, got)
	}
	if err := w.f.Sync(); err != nil {
		w.discard()
		return BlobInfo{}, fmt.Errorf("cache: sync blob %s: %w", w.d, classify(err))
	}
	info, added, replaced, err := w.publish(size)
	if err != nil {
		w.discard()
		return BlobInfo{}, err
	}
	if added {
		if replaced {
			// The stale record's share is retracted first, so an observer
			// summing sizes stays right.
			w.s.obs.removed(w.d)
		}
		event := info
		event.Scoped = w.scoped
		w.s.obs.added(event)
	}
	return info, nil
}

// Scope marks the blob as content of a registry scoped per repository:
// the BlobAdded event of its commit says so (BlobInfo.Scoped). Call it
// before Commit.
func (w *Writer) Scope() { w.scoped = true }

// publish renames the verified temp file into place and indexes it, or
// drops it if the blob is already stored. It reports whether a record was
// added, and whether that record replaced a stale one (file gone or of the
// wrong size).
func (w *Writer) publish(size int64) (info BlobInfo, added, replaced bool, err error) {
	s := w.s
	if err := s.rlock(); err != nil {
		return BlobInfo{}, false, false, err
	}
	defer s.closeMu.RUnlock()
	mu := s.stripe(w.hex)
	mu.Lock()
	defer mu.Unlock()

	final := s.blobPath(w.hex)
	old, err := s.getBlob(w.d)
	hadOld := err == nil
	switch {
	case hadOld:
		if fi, serr := os.Stat(final); serr == nil && fi.Size() == old.size {
			w.finish(final, old.info(w.d), true)
			return s.withAccess(old.info(w.d)), false, false, nil
		}
		// The record's file is gone or damaged: replace both below.
	case errors.Is(err, ErrNotFound):
	default:
		return BlobInfo{}, false, false, err
	}

	if err := s.ensureFanout(w.hex[:2]); err != nil {
		return BlobInfo{}, false, false, err
	}
	// w.mu is held across the rename so OpenReader never sees the old
	// path after the file has moved.
	w.mu.Lock()
	err = os.Rename(w.path, final)
	if err == nil {
		w.path = final
	}
	w.mu.Unlock()
	if err != nil {
		return BlobInfo{}, false, false, fmt.Errorf("cache: rename blob %s into place: %w", w.d, classify(err))
	}
	// From here on the verified file is in blobs/. On a later failure it
	// stays there unindexed (the next Commit of this digest, or the next
	// startup reconcile, indexes it), and the writer is finished without
	// removing anything (abandon).
	if err := syncDir(filepath.Dir(final)); err != nil {
		w.abandon(final)
		return BlobInfo{}, false, false, fmt.Errorf("cache: sync dir for blob %s: %w", w.d, classify(err))
	}
	now := s.now().Round(0) // stored without a monotonic reading; return the same
	rec := blobRecord{size: size, mediaType: w.mediaType, created: now, lastAccess: now}
	if err := s.update(func(txn *badger.Txn) error { return txn.Set(blobKey(w.d), rec.encode()) }); err != nil {
		w.abandon(final)
		return BlobInfo{}, false, false, fmt.Errorf("cache: index blob %s: %w", w.d, err)
	}
	if hadOld {
		s.usedBytes.Add(-old.size)
		s.usedBlobs.Add(-1)
	}
	s.usedBytes.Add(size)
	s.usedBlobs.Add(1)
	info = rec.info(w.d)
	w.finish(final, info, false)
	return info, true, hadOld, nil
}

// finish marks the writer committed. If the blob already existed the temp
// file is removed (open readers keep their descriptors).
func (w *Writer) finish(final string, info BlobInfo, existed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.f.Close()
	if existed {
		if err := os.Remove(w.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			w.s.log.Warn("removing temp file", "path", w.path, "err", err)
		}
	}
	w.path = final
	w.state = writerCommitted
	w.info = info
}

// abandon finishes a writer whose file was already renamed to final but
// could not be indexed: nothing is removed, OpenReader fails, and the Store
// is marked for a reconcile at the next start.
func (w *Writer) abandon(final string) {
	w.s.leftFile("blob file left in place without a record", "digest", w.d)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.f.Close()
	w.path = final
	w.state = writerCancelled
}

// Cancel removes the temp file. It is a no-op after Commit and safe to call
// twice.
func (w *Writer) Cancel() error {
	w.discard()
	return nil
}

// ensureFanout creates blobs/sha256/<xx> if needed, syncing the parent so
// the new directory survives a crash.
func (s *Store) ensureFanout(xx string) error {
	dir := filepath.Join(s.blobDir, xx)
	err := os.Mkdir(dir, dirMode)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cache: create %s: %w", dir, classify(err))
	}
	return syncDir(s.blobDir)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
