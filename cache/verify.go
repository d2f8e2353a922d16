package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"
)

// DefaultScrubRate is how fast the background scrub reads when
// Options.ScrubRate is 0: slow enough that hits keep the disk.
const DefaultScrubRate = 10 << 20

// verifyChunk is the read size of a verification: one buffer per
// verification, whatever the blob's size.
const verifyChunk = 256 << 10

// VerifyOptions configure VerifyAll.
type VerifyOptions struct {
	// Rate bounds how fast blob files are read, in bytes per second, so
	// that a live server stays fast. 0: as fast as the disk goes.
	Rate int64
	// Progress, if set, hears of the bytes read as they are hashed (called
	// from VerifyAll's goroutine, after every chunk).
	Progress func(n int64)
}

// VerifyReport is what one VerifyAll found.
type VerifyReport struct {
	Blobs int64 // blobs re-hashed to the end
	Bytes int64 // bytes read
	// Corrupt lists the blobs whose content did not match their digest.
	// Each was removed from index and disk at once.
	Corrupt []BlobInfo
	// Missing lists the blobs whose record was there but whose file was
	// not (deleted by hand while the mirror was stopped, a lost disk
	// sector): each record was dropped. Unlike Vanished, nothing else
	// removed them.
	Missing []BlobInfo
	// Vanished counts blobs evicted or replaced before or while they were
	// read: nothing to judge.
	Vanished int64
}

// VerifyStats are running totals since Open, for metrics.
type VerifyStats struct {
	// Verified counts blobs re-hashed to the end by the scrub or VerifyAll.
	Verified int64
	// Failed counts blobs found corrupt and removed: by the scrub,
	// VerifyAll, or a read that hashes (ReadAll).
	Failed int64
	// ScrubPasses counts finished background scrub passes.
	ScrubPasses int64
}

type verifyCounters struct {
	verified, failed, passes atomic.Int64
}

// VerifyStats returns the running totals.
func (s *Store) VerifyStats() VerifyStats {
	return VerifyStats{Verified: s.verifyStats.verified.Load(), Failed: s.verifyStats.failed.Load(),
		ScrubPasses: s.verifyStats.passes.Load()}
}

// VerifyAll re-hashes every indexed blob, in digest order, at most
// opts.Rate bytes per second. A blob whose content does not match its
// digest is removed from index and disk at once (the next request fetches
// it again) and listed in the report. It holds no lock while it reads, so
// hits, fills and eviction go on; a blob evicted under it is skipped. It
// reads through one fixed buffer and records no access (it does not make
// blobs look recently used). It returns early, with the report so far,
// when ctx ends.
func (s *Store) VerifyAll(ctx context.Context, opts VerifyOptions) (VerifyReport, error) {
	v := verifier{s: s, progress: opts.Progress, buf: make([]byte, verifyChunk)}
	if opts.Rate > 0 {
		// A tenth of a second's worth of burst, so that a wait that
		// overshoots (a busy machine) is made up by the next reads.
		v.lim = rate.NewLimiter(rate.Limit(opts.Rate), max(verifyChunk, int(min(opts.Rate/10, 1<<30))))
	}
	var rep VerifyReport
	err := s.Walk(func(info BlobInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		ok, n, err := v.verify(ctx, info)
		rep.Bytes += n
		switch {
		case errors.Is(err, errFileMissing):
			rep.Missing = append(rep.Missing, info)
		case errors.Is(err, errVanished):
			rep.Vanished++
		case err != nil:
			return err
		case ok:
			rep.Blobs++
		default:
			rep.Blobs++
			rep.Corrupt = append(rep.Corrupt, info)
		}
		return nil
	})
	return rep, err
}

// errVanished: the blob was evicted or replaced before or while it was
// read.
var errVanished = errors.New("cache: blob vanished during verification")

// errFileMissing: the blob's record was there without its file, and was
// dropped.
var errFileMissing = errors.New("cache: blob file missing")

type verifier struct {
	s        *Store
	lim      *rate.Limiter
	progress func(int64)
	buf      []byte
}

// verify re-hashes one blob file. It reports whether the content matched
// and how many bytes it read; a mismatch has removed the blob already.
func (v *verifier) verify(ctx context.Context, info BlobInfo) (ok bool, read int64, err error) {
	s := v.s
	hx, err := validateDigest(info.Digest)
	if err != nil {
		return false, 0, errVanished // cannot be indexed; reconcile drops it
	}
	f, err := os.Open(s.blobPath(hx))
	if errors.Is(err, os.ErrNotExist) {
		if s.dropStale(info.Digest, hx, "file missing") {
			return false, 0, errFileMissing
		}
		return false, 0, errVanished // evicted meanwhile
	}
	if err != nil {
		return false, 0, fmt.Errorf("cache: verify %s: %w", info.Digest, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, 0, fmt.Errorf("cache: verify %s: %w", info.Digest, err)
	}
	h := sha256.New()
	for {
		n, rerr := f.Read(v.buf)
		if n > 0 {
			h.Write(v.buf[:n])
			read += int64(n)
			if v.progress != nil {
				v.progress(int64(n))
			}
			// Pay for what was read before reading more.
			if v.lim != nil {
				if err := v.lim.WaitN(ctx, n); err != nil {
					return false, read, err
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return false, read, fmt.Errorf("cache: verify %s: %w", info.Digest, rerr)
		}
	}
	if hex.EncodeToString(h.Sum(nil)) == hx {
		s.verifyStats.verified.Add(1)
		return true, read, nil
	}
	if !s.dropCorrupt(info.Digest, hx, fi) {
		return false, read, errVanished // evicted or replaced meanwhile
	}
	s.verifyStats.verified.Add(1)
	return false, read, nil
}

// dropCorrupt removes blob d, whose file (described by fi, from the
// descriptor that was hashed) does not hold what its name says: the index
// record first, then the file. If the path no longer names that file
// (evicted, or evicted and fetched again, verified, meanwhile), nothing
// is touched and it reports false.
func (s *Store) dropCorrupt(d digest.Digest, hx string, fi os.FileInfo) bool {
	if err := s.rlock(); err != nil {
		return false
	}
	mu := s.stripe(hx)
	mu.Lock()
	path := s.blobPath(hx)
	if cur, err := os.Stat(path); err != nil || !os.SameFile(cur, fi) {
		mu.Unlock()
		s.closeMu.RUnlock()
		return false
	}
	rec, rerr := s.getBlob(d)
	indexed := rerr == nil
	var err error
	if indexed {
		err = s.update(func(txn *badger.Txn) error { return txn.Delete(blobKey(d)) })
	}
	if err == nil {
		if indexed {
			s.usedBytes.Add(-rec.size)
			s.usedBlobs.Add(-1)
		}
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			s.leftFile("removing corrupt blob file", "digest", d, "err", rerr)
		}
	}
	mu.Unlock()
	s.closeMu.RUnlock()
	if err != nil {
		s.log.Error("removing corrupt blob from the index", "digest", d, "err", err)
		return false
	}
	s.verifyStats.failed.Add(1)
	s.log.Error("blob content does not match its digest: removed it; the next request fetches it again", "digest", d)
	if indexed {
		s.forgetAccess(d)
		s.obs.removed(d)
	}
	return true
}

// scrubLoop re-hashes the whole cache at scrubRate every time trigger
// fires, until Close. A pass that outlasts the interval delays the next.
func (s *Store) scrubLoop(trigger <-chan time.Time) {
	defer s.loops.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-trigger:
		}
		start := time.Now()
		rep, err := s.VerifyAll(s.ctx, VerifyOptions{Rate: s.scrubRate})
		s.verifyStats.passes.Add(1)
		if err != nil && s.ctx.Err() == nil {
			s.log.Warn("cache scrub", "err", err)
		}
		s.log.Info("cache scrub pass", "blobs", rep.Blobs, "bytes", rep.Bytes, "corrupt", len(rep.Corrupt),
			"vanished", rep.Vanished, "took_s", time.Since(start).Round(time.Millisecond).Seconds())
	}
}

// OpenVerified opens blob d, like Open, for one sequential read that
// checks what it returns: the content is hashed as it is read, and the
// last chunk is handed out only if the whole matches d. If it does not,
// the blob is removed (as VerifyAll removes it) and Read fails with an
// error wrapping ErrDigestMismatch, so a reader never receives a complete
// damaged body. Export reads through it.
func (s *Store) OpenVerified(d digest.Digest) (io.ReadCloser, BlobInfo, error) {
	f, info, err := s.Open(d)
	if err != nil {
		return nil, info, err
	}
	return &verifyingReader{s: s, f: f, d: d, size: info.Size, h: sha256.New()}, info, nil
}

type verifyingReader struct {
	s       *Store
	f       *os.File
	d       digest.Digest
	size, n int64
	h       hash.Hash
	err     error
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.n >= r.size {
		return 0, io.EOF
	}
	if rest := r.size - r.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	k, err := r.f.Read(p)
	r.h.Write(p[:k])
	r.n += int64(k)
	if r.n == r.size {
		if hex.EncodeToString(r.h.Sum(nil)) != r.d.Encoded() {
			if fi, serr := r.f.Stat(); serr == nil {
				r.s.dropCorrupt(r.d, r.d.Encoded(), fi)
			}
			r.err = fmt.Errorf("%w: blob %s on disk no longer matches its digest (removed; fetch it again)", ErrDigestMismatch, r.d)
			return 0, r.err // the last chunk is withheld
		}
		return k, nil
	}
	if errors.Is(err, io.EOF) {
		r.err = fmt.Errorf("%w: blob %s: file ended after %d of %d bytes", ErrSizeMismatch, r.d, r.n, r.size)
		return k, r.err
	}
	return k, err
}

func (r *verifyingReader) Close() error { return r.f.Close() }
