package stack

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func put(t *testing.T, st *Stack, fill byte, size int) digest.Digest {
	t.Helper()
	data := bytes.Repeat([]byte{fill}, size)
	d := digest.FromBytes(data)
	if _, err := st.Store.Put(d, "application/octet-stream", data); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestStackWiredOneWay: the cache tells eviction what it holds (eviction
// subscribed), eviction deletes through the cache, and a pin made through
// the management operations keeps a blob from eviction, also after the
// stack is opened again (pins live in the index only).
func TestStackWiredOneWay(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(Options{Dir: dir, MaxSize: "10KiB", MinFree: 0, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	keep := put(t, st, 'k', 4<<10)
	if err := st.Ops.Pin(t.Context(), "keep", []digest.Digest{keep}); err != nil {
		t.Fatal(err)
	}
	var others []digest.Digest
	for i := range 3 {
		others = append(others, put(t, st, byte('a'+i), 4<<10))
	}
	if s := st.Evictor.Stats(); s.Blobs != 4 || s.PinnedBlobs != 1 {
		t.Fatalf("eviction's view after 4 puts: %+v", s)
	}
	if _, err := st.Evictor.EvictNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Store.Stat(keep); err != nil {
		t.Fatalf("the pinned blob was evicted: %v", err)
	}
	if _, err := st.Store.Stat(others[0]); err == nil {
		t.Error("the least recently used blob survived a pass over budget")
	}
	if bytes, _ := st.Store.Usage(); bytes > 10<<10*85/100 {
		t.Errorf("%d bytes left, above the low watermark", bytes)
	}
	st.Close()

	st, err = Open(Options{Dir: dir, MaxSize: "10KiB", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if s := st.Evictor.Stats(); s.PinnedBlobs != 1 {
		t.Errorf("pins after reopening: %+v", s)
	}
	if err := st.Store.Delete(keep); err != nil {
		t.Fatal(err)
	}
	if s := st.Evictor.Stats(); s.PinnedBlobs != 0 {
		t.Errorf("eviction still counts a blob the cache deleted: %+v", s)
	}
}

// TestOpenBusy: a second Open of a data dir in use fails with cache.ErrBusy,
// which is what sends commands to the running server.
func TestOpenBusy(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(Options{Dir: dir, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := Open(Options{Dir: dir, Logger: quiet()}); !errors.Is(err, cache.ErrBusy) {
		t.Fatalf("second Open: %v, want cache.ErrBusy", err)
	}
}

func TestBudget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{{"", 0, true}, {"0", 0, true}, {"1KiB", 1024, true}, {"lots", 0, false}, {"50%", 0, false}} {
		got, err := Budget(tc.in, "") // no filesystem: a percentage cannot be resolved
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("Budget(%q) = %d, %v", tc.in, got, err)
		}
	}
	if got, err := Budget("50%", t.TempDir()); err != nil || got <= 0 {
		t.Errorf("Budget(50%%) on a real filesystem = %d, %v", got, err)
	}
}

// TestLateRemovalKeepsARecommittedBlob: the cache tells eviction of a
// delete after the fact. A delete from outside eviction (purge, the scrub)
// whose notice arrives after the same blob was committed again must not
// make eviction forget it: it would stay on disk, uncounted and never
// evicted, until the next start.
func TestLateRemovalKeepsARecommittedBlob(t *testing.T) {
	st, err := Open(Options{Dir: t.TempDir(), MaxSize: "10KiB", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d := put(t, st, 'x', 1<<10)
	if err := st.Store.Delete(d); err != nil {
		t.Fatal(err)
	}
	if again := put(t, st, 'x', 1<<10); again != d {
		t.Fatal("a different blob")
	}
	evictionObserver{st.Evictor, st.Store}.BlobRemoved(d) // the delete's notice, late
	if s := st.Evictor.Stats(); s.Blobs != 1 || s.Bytes != 1<<10 {
		t.Errorf("eviction knows %d blobs, %d bytes; want the recommitted one", s.Blobs, s.Bytes)
	}
	if err := st.Store.Delete(d); err != nil {
		t.Fatal(err)
	}
	if s := st.Evictor.Stats(); s.Blobs != 0 {
		t.Errorf("eviction still knows %d blobs after a delete", s.Blobs)
	}
}
