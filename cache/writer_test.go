package cache

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	digest "github.com/opencontainers/go-digest"
)

func TestWriteCommitOpen(t *testing.T) {
	rec := &recorder{}
	s := openStore(t, "")
	s.Subscribe(rec)
	var total int64
	for i, n := range []int{0, 1, 4096, 300_001} {
		data, d := blob(n, uint64(i))
		w, err := s.Create(d, "application/vnd.oci.image.layer.v1.tar+gzip")
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(data); off += 7919 {
			if _, err := w.Write(data[off:min(off+7919, len(data))]); err != nil {
				t.Fatal(err)
			}
		}
		if got := w.Written(); got != int64(n) {
			t.Fatalf("Written = %d, want %d", got, n)
		}
		info, err := w.Commit(int64(n))
		if err != nil {
			t.Fatalf("Commit(%d bytes): %v", n, err)
		}
		if info.Digest != d || info.Size != int64(n) || info.MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" || info.Created.IsZero() {
			t.Fatalf("Commit info = %+v", info)
		}
		f, oinfo, err := s.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes (err %v), want %d equal bytes", len(got), err, n)
		}
		if oinfo.Size != int64(n) {
			t.Fatalf("Open info = %+v", oinfo)
		}
		if _, err := os.Stat(blobFile(s, d)); err != nil {
			t.Fatalf("blob file: %v", err)
		}
		total += int64(n)
	}
	if b, n := s.Usage(); b != total || n != 4 {
		t.Fatalf("Usage = %d bytes %d blobs, want %d, 4", b, n, total)
	}
	if got := files(t, filepath.Join(s.Dir(), "tmp")); len(got) != 0 {
		t.Fatalf("tmp/ not empty: %v", got)
	}
	if rec.count("added") != 4 {
		t.Fatalf("BlobAdded calls = %d, want 4", rec.count("added"))
	}
}

func TestCommitMismatch(t *testing.T) {
	data, d := blob(10_000, 1)
	_, other := blob(10_000, 2)
	for _, tc := range []struct {
		name     string
		d        digest.Digest
		expected int64
		wantErr  error
	}{
		{"wrong digest", other, -1, ErrDigestMismatch},
		{"wrong digest, right size", other, 10_000, ErrDigestMismatch},
		{"short", d, 10_001, ErrSizeMismatch},
		{"long", d, 9_999, ErrSizeMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			s := openStore(t, "")
			s.Subscribe(rec)
			w, err := s.Create(tc.d, "x")
			if err != nil {
				t.Fatal(err)
			}
			w.Write(data)
			_, err = w.Commit(tc.expected)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Commit error = %v, want %v", err, tc.wantErr)
			}
			if got := files(t, filepath.Join(s.Dir(), "blobs")); len(got) != 0 {
				t.Fatalf("blobs/ holds %v", got)
			}
			if got := files(t, filepath.Join(s.Dir(), "tmp")); len(got) != 0 {
				t.Fatalf("tmp/ holds %v", got)
			}
			if _, err := s.Stat(tc.d); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Stat after mismatch: %v", err)
			}
			if b, n := s.Usage(); b != 0 || n != 0 {
				t.Fatalf("Usage = %d, %d", b, n)
			}
			if rec.count("added") != 0 {
				t.Fatal("Observer heard of a blob that was not stored")
			}
			if err := w.Cancel(); err != nil {
				t.Fatalf("Cancel after failed Commit: %v", err)
			}
		})
	}
}

func TestWriterLifecycle(t *testing.T) {
	s := openStore(t, "")
	data, d := blob(100, 3)
	w, _ := s.Create(d, "x")
	w.Write(data)
	info, err := w.Commit(100)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Cancel(); err != nil {
		t.Fatalf("Cancel after Commit: %v", err)
	}
	if err := w.Cancel(); err != nil {
		t.Fatalf("second Cancel: %v", err)
	}
	if _, err := os.Stat(blobFile(s, d)); err != nil {
		t.Fatalf("Cancel after Commit removed the blob: %v", err)
	}
	if again, err := w.Commit(100); err != nil || again != info {
		t.Fatalf("second Commit = %+v, %v; want %+v", again, err, info)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Commit: %v", err)
	}

	w2, _ := s.Create(d, "x")
	w2.Write(data[:10])
	w2.Cancel()
	w2.Cancel()
	if _, err := w2.Commit(-1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Cancel: %v", err)
	}
	if got := files(t, filepath.Join(s.Dir(), "tmp")); len(got) != 0 {
		t.Fatalf("tmp/ holds %v", got)
	}
}

func TestConcurrentWritersOneDigest(t *testing.T) {
	rec := &recorder{}
	s := openStore(t, "")
	s.Subscribe(rec)
	data, d := blob(200_000, 4)
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			w, err := s.Create(d, "x")
			if err != nil {
				errs[i] = err
				return
			}
			<-start
			for off := 0; off < len(data); off += 16384 {
				w.Write(data[off:min(off+16384, len(data))])
			}
			_, errs[i] = w.Commit(int64(len(data)))
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	if b, c := s.Usage(); b != int64(len(data)) || c != 1 {
		t.Fatalf("Usage = %d, %d; want %d, 1", b, c, len(data))
	}
	if rec.count("added") != 1 {
		t.Fatalf("BlobAdded calls = %d, want 1", rec.count("added"))
	}
	if got := files(t, filepath.Join(s.Dir(), "tmp")); len(got) != 0 {
		t.Fatalf("tmp/ holds %v", got)
	}
	got, _, err := s.ReadAll(d, 1<<20)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAll: %v", err)
	}
}

// readN reads exactly n bytes from r.
func readN(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

func TestOpenReaderFollowsWriter(t *testing.T) {
	data, d := blob(100_000, 5)
	for _, end := range []string{"commit", "cancel"} {
		t.Run(end, func(t *testing.T) {
			s := openStore(t, "")
			w, err := s.Create(d, "x")
			if err != nil {
				t.Fatal(err)
			}
			w.Write(data[:30_000])
			r, err := w.OpenReader()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := readN(t, r, int(w.Written())); !bytes.Equal(got, data[:30_000]) {
				t.Fatal("follower saw other bytes")
			}
			w.Write(data[30_000:60_000])
			if got := readN(t, r, 30_000); !bytes.Equal(got, data[30_000:60_000]) {
				t.Fatal("follower saw other bytes")
			}
			w.Write(data[60_000:])
			switch end {
			case "commit":
				if _, err := w.Commit(int64(len(data))); err != nil {
					t.Fatal(err)
				}
				late, err := w.OpenReader()
				if err != nil {
					t.Fatalf("OpenReader after Commit: %v", err)
				}
				all, _ := io.ReadAll(late)
				late.Close()
				if !bytes.Equal(all, data) {
					t.Fatal("late reader saw other bytes")
				}
			case "cancel":
				w.Cancel()
				if _, err := w.OpenReader(); !errors.Is(err, ErrClosed) {
					t.Fatalf("OpenReader after Cancel: %v", err)
				}
				if got := files(t, filepath.Join(s.Dir(), "tmp")); len(got) != 0 {
					t.Fatalf("tmp/ holds %v", got)
				}
			}
			rest, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(rest, data[60_000:]) {
				t.Fatalf("after %s the follower read %d bytes (%v), want %d", end, len(rest), err, len(data)-60_000)
			}
		})
	}
}

func TestOpenReaderConcurrentWithCommit(t *testing.T) {
	s := openStore(t, "")
	data, d := blob(1<<20, 6)
	w, _ := s.Create(d, "x")
	var wg sync.WaitGroup
	done := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				r, err := w.OpenReader()
				if err != nil {
					t.Errorf("OpenReader during write/commit: %v", err)
					return
				}
				n := w.Written()
				b := make([]byte, n)
				if _, err := io.ReadFull(r, b); err != nil || !bytes.Equal(b, data[:n]) {
					t.Errorf("follower read of %d bytes: %v", n, err)
				}
				r.Close()
			}
		})
	}
	for off := 0; off < len(data); off += 32768 {
		w.Write(data[off : off+32768])
	}
	if _, err := w.Commit(int64(len(data))); err != nil {
		t.Fatal(err)
	}
	close(done)
	wg.Wait()
}
