package cache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/regmirror/regmirror/internal/testclock"
)

func TestDeleteWhileReading(t *testing.T) {
	rec := &recorder{}
	s := openStore(t, "")
	s.Subscribe(rec)
	data, d := blob(500_000, 7)
	mustPut(t, s, data, d, "x")
	f, _, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := readN(t, f, 1000)
	if err := s.Delete(d); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(append(head, rest...), data) {
		t.Fatalf("reader after Delete got %d bytes (%v), want all %d", len(head)+len(rest), err, len(data))
	}
	if _, err := os.Stat(blobFile(s, d)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("blob file still there: %v", err)
	}
	if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat after Delete: %v", err)
	}
	if err := s.Delete(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
	if b, n := s.Usage(); b != 0 || n != 0 {
		t.Fatalf("Usage = %d, %d", b, n)
	}
	if rec.count("removed") != 1 {
		t.Fatalf("BlobRemoved calls = %d", rec.count("removed"))
	}
}

func TestOpenDropsRecordWhenFileGone(t *testing.T) {
	rec := &recorder{}
	s := openStore(t, "")
	s.Subscribe(rec)
	data, d := blob(1000, 8)
	mustPut(t, s, data, d, "x")
	os.Remove(blobFile(s, d))
	if _, _, err := s.Open(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open with file gone: %v", err)
	}
	if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record survived: %v", err)
	}
	if b, n := s.Usage(); b != 0 || n != 0 {
		t.Fatalf("Usage = %d, %d", b, n)
	}
	if rec.count("removed") != 1 {
		t.Fatalf("BlobRemoved calls = %d", rec.count("removed"))
	}
	// A new fill of the same digest works.
	mustPut(t, s, data, d, "x")
}

func TestAccessTimesBatched(t *testing.T) {
	rec := &recorder{}
	clock := testclock.At(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	dir := t.TempDir()
	s := openStore(t, dir)
	s.Subscribe(rec)
	s.now = clock.Now
	data, d := blob(100, 9)
	created := mustPut(t, s, data, d, "x").LastAccess

	writes := s.indexWrites.Load()
	clock.Advance(time.Minute)
	if _, err := s.Stat(d); err != nil {
		t.Fatal(err)
	}
	f, info, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := created.Add(time.Minute)
	if !info.LastAccess.Equal(want) {
		t.Fatalf("Open LastAccess = %v, want %v", info.LastAccess, want)
	}
	clock.Advance(time.Minute)
	s.Touch(d)
	clock.Advance(time.Minute)
	if _, _, err := s.ReadAll(d, 1000); err != nil {
		t.Fatal(err)
	}
	want = created.Add(3 * time.Minute)

	if n := s.indexWrites.Load(); n != writes {
		t.Fatalf("reads caused %d index writes", n-writes)
	}
	stored, _ := s.getBlob(d)
	if !stored.lastAccess.Equal(created) {
		t.Fatalf("stored access time changed before flush: %v", stored.lastAccess)
	}
	if info, _ := s.Stat(d); !info.LastAccess.Equal(want) {
		t.Fatalf("Stat LastAccess = %v, want %v (in-memory)", info.LastAccess, want)
	}
	if rec.count("accessed") != 3 {
		t.Fatalf("BlobAccessed calls = %d, want 3 (Open, Touch, ReadAll)", rec.count("accessed"))
	}

	if err := flushNow(s); err != nil {
		t.Fatal(err)
	}
	if n := s.indexWrites.Load(); n != writes+1 {
		t.Fatalf("flush made %d index writes, want 1", n-writes)
	}
	stored, _ = s.getBlob(d)
	if !stored.lastAccess.Equal(want) {
		t.Fatalf("stored access time after flush = %v, want %v", stored.lastAccess, want)
	}

	// Close flushes what is pending; a reopened store sees it.
	clock.Advance(time.Minute)
	s.Touch(d)
	s.Close()
	s2 := openStore(t, dir)
	if info, _ := s2.Stat(d); !info.LastAccess.Equal(want.Add(time.Minute)) {
		t.Fatalf("after reopen LastAccess = %v, want %v", info.LastAccess, want.Add(time.Minute))
	}
}

// TestAccessFlushLoop: the flush loop writes pending access times to the
// index on its tick, and not before. The tick and the clock are the
// test's (Options.AccessFlushTrigger, s.now), so nothing waits on time.
func TestAccessFlushLoop(t *testing.T) {
	tick := make(chan time.Time)
	s := openStore(t, "", func(o *Options) {
		o.AccessFlushTrigger = tick
		o.ValueLogGCInterval = 10 * time.Millisecond // exercise the GC loop too
	})
	clock := testclock.At(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	s.now = clock.Now
	data, d := blob(100, 10)
	before := mustPut(t, s, data, d, "x").LastAccess
	clock.Advance(time.Minute)
	s.Touch(d)
	stored := func() time.Time {
		s.closeMu.RLock()
		defer s.closeMu.RUnlock()
		rec, err := s.getBlob(d)
		if err != nil {
			t.Fatal(err)
		}
		return rec.lastAccess
	}
	if got := stored(); !got.Equal(before) {
		t.Fatalf("before the tick the index has %v, want the commit's %v", got, before)
	}
	tick <- time.Time{} // the loop takes this tick and flushes;
	tick <- time.Time{} // it takes the next only after that flush
	if got, want := stored(), before.Add(time.Minute); !got.Equal(want) {
		t.Fatalf("after the tick the index has %v, want %v", got, want)
	}
}

func TestReadAll(t *testing.T) {
	s := openStore(t, "")
	data, d := blob(2000, 11)
	mustPut(t, s, data, d, "application/vnd.oci.image.manifest.v1+json")
	got, info, err := s.ReadAll(d, 2000)
	if err != nil || !bytes.Equal(got, data) || info.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Fatalf("ReadAll = %d bytes, %+v, %v", len(got), info, err)
	}
	if _, _, err := s.ReadAll(d, 1999); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ReadAll over the limit: %v", err)
	}
	// Same size, other content (bit rot): removed, reported missing.
	bad := bytes.Clone(data)
	bad[0] ^= 0xff
	os.WriteFile(blobFile(s, d), bad, 0o644)
	if _, _, err := s.ReadAll(d, 2000); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReadAll of corrupt content: %v", err)
	}
	if _, err := os.Stat(blobFile(s, d)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("corrupt file kept")
	}
}

func TestPut(t *testing.T) {
	s := openStore(t, "")
	data, d := blob(300, 12)
	if _, err := s.Put(d, "x", data[:299]); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Put of wrong content: %v", err)
	}
	first := mustPut(t, s, data, d, "x")
	again := mustPut(t, s, data, d, "y")
	if !again.Created.Equal(first.Created) || again.MediaType != "x" {
		t.Fatalf("second Put replaced the record: %+v", again)
	}
	if _, n := s.Usage(); n != 1 {
		t.Fatalf("blobs = %d", n)
	}
}

func TestWalk(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	s.walkPage = 3 // cross page boundaries
	want := map[digest.Digest]int64{}
	for i := range 10 {
		data, d := blob(100+i, uint64(100+i))
		mustPut(t, s, data, d, "x")
		want[d] = int64(len(data))
	}
	if err := s.SetMediaType(digest.FromString("absent"), "y"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetMediaType of a missing blob: %v", err)
	}
	// Walk, deleting every other blob from inside fn.
	seen := map[digest.Digest]bool{}
	i := 0
	err := s.Walk(func(b BlobInfo) error {
		if seen[b.Digest] || want[b.Digest] != b.Size || b.MediaType != "x" {
			t.Errorf("Walk gave %+v", b)
		}
		seen[b.Digest] = true
		if i++; i%2 == 0 {
			return s.Delete(b.Digest)
		}
		return nil
	})
	if err != nil || len(seen) != 10 {
		t.Fatalf("Walk saw %d blobs, err %v", len(seen), err)
	}
	stop := errors.New("stop")
	if err := s.Walk(func(BlobInfo) error { return stop }); err != stop {
		t.Fatalf("Walk did not return fn's error: %v", err)
	}
	_, n := s.Usage()
	s.Close()
	s2 := openStore(t, dir)
	if _, n2 := s2.Usage(); n2 != n {
		t.Fatalf("Usage after reopen = %d blobs, before %d", n2, n)
	}
}

func TestClosed(t *testing.T) {
	s := openStore(t, "")
	data, d := blob(10, 13)
	w, _ := s.Create(d, "x")
	w.Write(data)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := w.Commit(10); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close: %v", err)
	}
	for name, err := range map[string]error{
		"Stat":   func() error { _, err := s.Stat(d); return err }(),
		"Create": func() error { _, err := s.Create(d, "x"); return err }(),
		"Delete": s.Delete(d),
		"Tag":    func() error { _, err := s.Tag("r", "a", "t"); return err }(),
		"Walk":   s.Walk(func(BlobInfo) error { return nil }),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
}

func TestBusy(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	_, err := Open(Options{Dir: dir, Logger: testLogger(io.Discard)})
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Open = %v, want ErrBusy naming %s", err, dir)
	}
	// The refused Open must not have touched the live store's downloads.
	data, d := blob(10, 14)
	w, _ := s.Create(d, "x")
	w.Write(data)
	if _, err := Open(Options{Dir: dir, Logger: testLogger(io.Discard)}); !errors.Is(err, ErrBusy) {
		t.Fatal(err)
	}
	if _, err := w.Commit(10); err != nil {
		t.Fatalf("Commit after a refused Open: %v", err)
	}
	s.Close()
	openStore(t, dir) // free again
}

func TestNoSpaceInjected(t *testing.T) {
	s := openStore(t, "")
	full := true
	s.writeHook = func(f *os.File, p []byte) (int, error) {
		if !full {
			return f.Write(p)
		}
		n := min(len(p), 10)
		f.Write(p[:n])
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	data, d := blob(100, 15)

	// Abandoned after ENOSPC: nothing is left behind.
	w, err := s.Create(d, "x")
	if err != nil {
		t.Fatal(err)
	}
	n, err := w.Write(data)
	if n != 10 || !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Write = %d, %v; want 10, ErrNoSpace wrapping ENOSPC", n, err)
	}
	if err := w.Cancel(); err != nil {
		t.Fatal(err)
	}
	if got := files(t, filepath.Join(s.Dir(), "tmp")); len(got) != 0 {
		t.Fatalf("tmp/ holds %v", got)
	}
	if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat: %v", err)
	}

	// Resumed after space was freed: the writer stays usable and the blob
	// verifies, since exactly the bytes written were hashed.
	w, err = s.Create(d, "x")
	if err != nil {
		t.Fatal(err)
	}
	n, err = w.Write(data)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Write: %v, want ErrNoSpace", err)
	}
	full = false
	if _, err := w.Write(data[n:]); err != nil {
		t.Fatalf("Write after space was freed: %v", err)
	}
	if _, err := w.Commit(int64(len(data))); err != nil {
		t.Fatalf("Commit after a resumed write: %v", err)
	}
}

func TestClassify(t *testing.T) {
	for _, err := range []error{syscall.ENOSPC, syscall.EDQUOT, fmt.Errorf("x: %w", &os.PathError{Err: syscall.ENOSPC})} {
		if !errors.Is(classify(err), ErrNoSpace) || !errors.Is(classify(err), err) {
			t.Errorf("classify(%v) = %v", err, classify(err))
		}
	}
	if errors.Is(classify(syscall.EIO), ErrNoSpace) || classify(nil) != nil {
		t.Error("classify wraps what it should not")
	}
}

// A record whose file vanished is replaced by the next fill, and the totals
// stay right.
func TestRefillReplacesStaleRecord(t *testing.T) {
	rec := &recorder{}
	s := openStore(t, "")
	s.Subscribe(rec)
	data, d := blob(4000, 16)
	mustPut(t, s, data, d, "x")
	os.Remove(blobFile(s, d))
	info := mustPut(t, s, data, d, "y")
	if info.MediaType != "y" {
		t.Fatalf("stale record kept: %+v", info)
	}
	if b, n := s.Usage(); b != 4000 || n != 1 {
		t.Fatalf("Usage = %d, %d; want 4000, 1", b, n)
	}
	if rec.count("added") != 2 || rec.count("removed") != 1 {
		t.Fatalf("BlobAdded calls = %d, BlobRemoved %d; want 2, 1", rec.count("added"), rec.count("removed"))
	}
	if got, _, err := s.ReadAll(d, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAll: %v", err)
	}
}

func TestAddLinkIdempotent(t *testing.T) {
	s := openStore(t, "")
	_, d := blob(1, 17)
	if err := s.AddLink("r", "a", d); err != nil {
		t.Fatal(err)
	}
	w := s.indexWrites.Load()
	if err := s.AddLink("r", "a", d); err != nil {
		t.Fatal(err)
	}
	if s.indexWrites.Load() != w {
		t.Fatal("re-adding a link wrote to the index")
	}
}

// TestFailedAccessFlushIsKept: access times a flush could not write stay
// in memory (Stat reports them) and the next flush writes them; eviction
// orders by them, so losing one would evict a blob in use.
func TestFailedAccessFlushIsKept(t *testing.T) {
	s, _, d, created, want := touchedBlob(t)

	s.flushHook = func() error { return errors.New("disk on fire") }
	if err := flushNow(s); err == nil {
		t.Fatal("the flush reported no error")
	}
	if stored, _ := s.getBlob(d); !stored.lastAccess.Equal(created) {
		t.Fatalf("a failed flush stored %v", stored.lastAccess)
	}
	if info, _ := s.Stat(d); !info.LastAccess.Equal(want) {
		t.Fatalf("after a failed flush Stat LastAccess = %v, want %v (kept in memory)", info.LastAccess, want)
	}
	s.flushHook = nil
	if err := flushNow(s); err != nil {
		t.Fatal(err)
	}
	if stored, _ := s.getBlob(d); !stored.lastAccess.Equal(want) {
		t.Fatalf("the next flush stored %v, want %v", stored.lastAccess, want)
	}
}

// TestStatDuringAccessFlush: while a flush writes a batch, Stat still
// reports the batch's access times, and accesses made meanwhile are
// written by the next flush, not lost when the batch finishes.
func TestStatDuringAccessFlush(t *testing.T) {
	s, clock, d, _, first := touchedBlob(t)

	held, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	defer letGo() // a failure below must not leave the flush (and Close) hanging
	s.flushHook = func() error { held <- struct{}{}; <-release; return nil }
	flushed := make(chan error, 1)
	go func() { flushed <- flushNow(s) }()
	<-held // the batch is taken, not yet written
	if info, _ := s.Stat(d); !info.LastAccess.Equal(first) {
		t.Fatalf("Stat during the flush: LastAccess = %v, want %v", info.LastAccess, first)
	}
	clock.Advance(time.Minute)
	s.Touch(d)
	second := first.Add(time.Minute)
	letGo()
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	s.flushHook = nil
	if info, _ := s.Stat(d); !info.LastAccess.Equal(second) {
		t.Fatalf("after the flush Stat LastAccess = %v, want %v", info.LastAccess, second)
	}
	if err := flushNow(s); err != nil {
		t.Fatal(err)
	}
	if stored, _ := s.getBlob(d); !stored.lastAccess.Equal(second) {
		t.Fatalf("stored %v, want %v", stored.lastAccess, second)
	}
}

// touchedBlob is a store on a test clock holding one blob d, stored at
// created and touched a minute later, at touched; the touch is not flushed.
func touchedBlob(t *testing.T) (s *Store, clock *testclock.Clock, d digest.Digest, created, touched time.Time) {
	clock = testclock.At(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	s = openStore(t, t.TempDir())
	s.now = clock.Now
	data, d := blob(100, 10)
	created = mustPut(t, s, data, d, "x").LastAccess
	clock.Advance(time.Minute)
	s.Touch(d)
	return s, clock, d, created, created.Add(time.Minute)
}

// flushNow runs one access flush as the flush loop does.
func flushNow(s *Store) error {
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	return s.flushAccess()
}
