package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// flipByte damages a blob file in place (bit rot): same size, same inode.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyAllRemovesFlippedByte: one byte flipped in a cached file (the
// size still matches, so Open and a restart's reconcile see nothing) is
// found, removed from index and disk, counted, and the Observer told; the
// intact blobs stay.
func TestVerifyAllRemovesFlippedByte(t *testing.T) {
	rec := &recorder{}
	s := openStore(t, "")
	s.Subscribe(rec)
	big, bigD := blob(3*verifyChunk+17, 1) // several chunks
	small, smallD := blob(100, 2)
	bad, badD := blob(2*verifyChunk, 3)
	for _, b := range []struct {
		data []byte
		d    digest.Digest
	}{{big, bigD}, {small, smallD}, {bad, badD}} {
		mustPut(t, s, b.data, b.d, "x")
	}
	flipByte(t, blobFile(s, badD), verifyChunk+5)

	var progress int64
	rep, err := s.VerifyAll(context.Background(), VerifyOptions{Rate: 1 << 40, Progress: func(n int64) { progress += n }})
	if err != nil {
		t.Fatal(err)
	}
	total := int64(len(big) + len(small) + len(bad))
	if rep.Blobs != 3 || rep.Bytes != total || progress != total || len(rep.Corrupt) != 1 || rep.Corrupt[0].Digest != badD {
		t.Fatalf("report %+v (progress %d), want 3 blobs, %d bytes, %s corrupt", rep, progress, total, badD)
	}
	if _, err := s.Stat(badD); !errors.Is(err, ErrNotFound) {
		t.Fatalf("corrupt blob still indexed: %v", err)
	}
	if _, err := os.Stat(blobFile(s, badD)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("corrupt blob file kept")
	}
	if bytes, n := s.Usage(); n != 2 || bytes != int64(len(big)+len(small)) {
		t.Fatalf("usage %d bytes in %d blobs after the removal", bytes, n)
	}
	if rec.count("removed") != 1 {
		t.Fatalf("observer heard %d removals, want 1", rec.count("removed"))
	}
	if rec.count("accessed") != 0 {
		t.Fatal("verification recorded accesses: it would make every blob look recently used")
	}
	if st := s.VerifyStats(); st.Verified != 3 || st.Failed != 1 {
		t.Fatalf("stats %+v, want 3 verified, 1 failed", st)
	}
	// The digest can be stored again, verified.
	mustPut(t, s, bad, badD, "x")
	if rep, err := s.VerifyAll(context.Background(), VerifyOptions{}); err != nil || len(rep.Corrupt) != 0 || rep.Blobs != 3 {
		t.Fatalf("second pass: %+v, %v", rep, err)
	}
}

// TestVerifyCopesWithEviction: a blob evicted while it is being hashed is
// skipped, and one evicted and fetched again (verified, a new file) while
// the old damaged file was being hashed is not removed.
func TestVerifyCopesWithEviction(t *testing.T) {
	for _, refill := range []bool{false, true} {
		s := openStore(t, "")
		data, d := blob(4*verifyChunk, 7)
		mustPut(t, s, data, d, "x")
		flipByte(t, blobFile(s, d), 3*verifyChunk)
		chunks := 0
		rep, err := s.VerifyAll(context.Background(), VerifyOptions{Progress: func(int64) {
			chunks++
			if chunks != 1 {
				return
			}
			// Eviction runs between two reads of the scrub.
			if err := s.Delete(d); err != nil {
				t.Error(err)
			}
			if refill {
				mustPut(t, s, data, d, "x")
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Vanished != 1 || len(rep.Corrupt) != 0 {
			t.Fatalf("refill=%v: report %+v, want the blob counted as vanished", refill, rep)
		}
		_, err = s.Stat(d)
		if refill {
			if err != nil {
				t.Fatalf("the good copy fetched during the scrub was removed: %v", err)
			}
			got, _ := os.ReadFile(blobFile(s, d))
			if !bytes.Equal(got, data) {
				t.Fatal("the good copy's file was touched")
			}
		} else if !errors.Is(err, ErrNotFound) {
			t.Fatalf("evicted blob came back: %v", err)
		}
		if st := s.VerifyStats(); st.Failed != 0 {
			t.Fatalf("refill=%v: %d failures counted for a blob that was evicted", refill, st.Failed)
		}
	}
}

// TestVerifyStopsWithContext: a rate-limited verification waits on the
// limiter, not in a busy loop, and returns when its context ends without
// judging the blob it was reading.
func TestVerifyStopsWithContext(t *testing.T) {
	s := openStore(t, "")
	data, d := blob(4*verifyChunk, 8)
	mustPut(t, s, data, d, "x")
	ctx, cancel := context.WithCancel(context.Background())
	// 1 byte/s: after the first chunk (the limiter's burst) the next read
	// would wait for days.
	rep, err := s.VerifyAll(ctx, VerifyOptions{Rate: 1, Progress: func(int64) { cancel() }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("VerifyAll after cancel: %v", err)
	}
	if rep.Bytes != verifyChunk || len(rep.Corrupt) != 0 || rep.Blobs != 0 {
		t.Fatalf("report %+v, want one chunk read and nothing judged", rep)
	}
	if _, err := s.Stat(d); err != nil {
		t.Fatal(err)
	}
}

// TestScrubLoop: the background scrub, driven by its trigger, finds a
// flipped byte, removes the blob and counts it.
func TestScrubLoop(t *testing.T) {
	tick := make(chan time.Time)
	s := openStore(t, "", func(o *Options) { o.ScrubTrigger = tick; o.ScrubRate = 1 << 40 })
	good, goodD := blob(1000, 9)
	bad, badD := blob(verifyChunk+1, 10)
	mustPut(t, s, good, goodD, "x")
	mustPut(t, s, bad, badD, "x")
	flipByte(t, blobFile(s, badD), verifyChunk)
	// The trigger is unbuffered: the second send is taken only once the
	// first pass has ended.
	tick <- time.Now()
	tick <- time.Now()
	st := s.VerifyStats()
	if st.ScrubPasses < 1 || st.Failed != 1 || st.Verified < 2 {
		t.Fatalf("stats after a pass: %+v, want a pass, 2 verified, 1 failed", st)
	}
	if _, err := s.Stat(badD); !errors.Is(err, ErrNotFound) {
		t.Fatalf("corrupt blob still indexed after the scrub: %v", err)
	}
	if _, err := s.Stat(goodD); err != nil {
		t.Fatal(err)
	}
	// Close stops the loop (and a pass in progress).
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOpenVerified: a read through OpenVerified hands out intact content
// whole, and never the end of damaged content: the last chunk is withheld,
// the read fails with ErrDigestMismatch, and the blob is removed.
func TestOpenVerified(t *testing.T) {
	s := openStore(t, "")
	data, d := blob(3*verifyChunk+1, 30)
	mustPut(t, s, data, d, "x")
	rc, info, err := s.OpenVerified(d)
	if err != nil || info.Size != int64(len(data)) {
		t.Fatalf("OpenVerified: %+v, %v", info, err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("intact blob: %d bytes, %v", len(got), err)
	}

	flipByte(t, blobFile(s, d), 10)
	rc, _, err = s.OpenVerified(d)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.CopyN(io.Discard, rc, int64(len(data))) // as export reads
	rc.Close()
	if !errors.Is(err, ErrDigestMismatch) || n >= int64(len(data)) {
		t.Fatalf("damaged blob: %d of %d bytes handed out, err %v", n, len(data), err)
	}
	if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("damaged blob still indexed: %v", err)
	}
	if st := s.VerifyStats(); st.Failed != 1 {
		t.Fatalf("failed count %d, want 1", st.Failed)
	}
}
