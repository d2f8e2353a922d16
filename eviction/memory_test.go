package eviction

import (
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"
)

// TestMemoryPerEntry: what the Evictor keeps per blob of the cache's key
// form, everything counted (it keeps no key string the cache handed in).
// Issue 14 holds RSS with 1,000,000 cached blobs under 250 MiB; the
// evictor's share was ~200 bytes a blob (string key, heap node, map slot)
// and is now one 64-byte arena entry and a 4-byte table cell.
func TestMemoryPerEntry(t *testing.T) {
	const n = 100_000
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	e, err := New(Options{MaxBytes: 1 << 40, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nopDeleter{})
	if err != nil {
		t.Fatal(err)
	}
	func() {
		entries := make([]Entry, n)
		for i, k := range digestKeys(n) {
			entries[i] = Entry{Key: k, Size: int64(i), LastAccess: t0.Add(time.Duration(i))}
		}
		e.Load(entries)
	}()
	runtime.GC()
	runtime.ReadMemStats(&after)
	perEntry := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	t.Logf("%.1f bytes per entry", perEntry)
	if perEntry > 100 {
		t.Fatalf("the evictor keeps %.1f bytes per blob, want at most 100", perEntry)
	}
	if s := e.Stats(); s.Blobs != n {
		t.Fatalf("loaded %d blobs", s.Blobs)
	}
	runtime.KeepAlive(e)
}
