package proxy

import (
	"errors"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
)

// newTestFill is a fill whose download the test drives by hand.
func newTestFill(t *testing.T, content []byte) (*fill, *cache.Store) {
	t.Helper()
	store := tempStore(t)
	w, err := store.Create(digest.FromBytes(content), "application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Cancel() })
	f := newFill(digest.FromBytes(content), w)
	f.start(int64(len(content)))
	return f, store
}

func follow(t *testing.T, f *fill) *follower {
	t.Helper()
	file, err := f.writer.OpenReader()
	if err != nil {
		t.Fatal(err)
	}
	r := &follower{fill: f, file: file, end: -1}
	t.Cleanup(func() { r.Close() })
	return r
}

// readAsync reads r to its end in the background.
func readAsync(r io.Reader) (got chan []byte, errc chan error) {
	got, errc = make(chan []byte, 1), make(chan error, 1)
	go func() {
		b, err := io.ReadAll(r)
		got <- b
		errc <- err
	}()
	return got, errc
}

// TestFollowerHoldsBackLastByte proves the fill's rule: while the digest is
// unverified, no client gets the whole body — the final byte waits for the
// verdict, and a failed verdict ends the stream with an error instead.
func TestFollowerHoldsBackLastByte(t *testing.T) {
	content := []byte("every byte but the last is released early")
	for _, verified := range []bool{true, false} {
		f, _ := newTestFill(t, content)
		r := follow(t, f)
		if _, err := f.writer.Write(content); err != nil {
			t.Fatal(err)
		}
		f.advance(len(content))

		var early [64]byte
		n, err := r.Read(early[:])
		if err != nil || n != len(content)-1 {
			t.Fatalf("before the verdict: read %d bytes, %v; want all but the last", n, err)
		}
		got, errc := readAsync(r) // blocks on the verdict
		if verified {
			f.finish(nil)
		} else {
			f.finish(cache.ErrDigestMismatch)
		}
		rest, err := <-got, <-errc
		switch {
		case verified && (err != nil || string(rest) != string(content[len(content)-1:])):
			t.Fatalf("after a good verdict: %q, %v", rest, err)
		case !verified && (!errors.Is(err, cache.ErrDigestMismatch) || len(rest) != 0):
			t.Fatalf("after a bad verdict: %q, %v; want no more bytes and the mismatch", rest, err)
		}
	}
}

// TestFollowerStreamsWhileDownloading: a follower gets bytes as they are
// written, before the download ends.
func TestFollowerStreamsWhileDownloading(t *testing.T) {
	content := make([]byte, 3*fillBufferSize)
	f, _ := newTestFill(t, content)
	r := follow(t, f)
	f.writer.Write(content[:fillBufferSize])
	f.advance(fillBufferSize)
	buf := make([]byte, len(content))
	n, err := io.ReadAtLeast(r, buf, fillBufferSize-1)
	if err != nil || n != fillBufferSize-1 {
		t.Fatalf("mid-download read: %d, %v", n, err)
	}
}
