package eviction

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"log/slog"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

type nopDeleter struct{}

func (nopDeleter) Delete(string) error { return nil }

// benchKeys returns n keys of the cache's form (see digestKeys); the cache
// hands in no other.
func benchKeys(n int) []string { return digestKeys(n) }

func benchEvictor(b *testing.B, keys []string, opts Options) *Evictor {
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := New(opts, nopDeleter{})
	if err != nil {
		b.Fatal(err)
	}
	entries := make([]Entry, len(keys))
	for i, k := range keys {
		entries[i] = Entry{Key: k, Size: 1, LastAccess: t0.Add(time.Duration(i))}
	}
	e.Load(entries)
	return e
}

// BenchmarkEvict100k: one EvictNow pass over 100k one-byte entries down to a
// low watermark of 1000 bytes (99,000 deletions through a no-op Deleter).
func BenchmarkEvict100k(b *testing.B) {
	keys := benchKeys(100_000)
	var blobs int64
	var elapsed time.Duration
	for b.Loop() {
		b.StopTimer()
		e := benchEvictor(b, keys, Options{MaxBytes: 100_000, HighWatermark: 0.02, LowWatermark: 0.01})
		b.StartTimer()
		start := time.Now()
		res, err := e.EvictNow(context.Background())
		elapsed += time.Since(start)
		if err != nil || res.Blobs != 99_000 {
			b.Fatalf("%+v %v", res, err)
		}
		blobs += int64(res.Blobs)
	}
	b.ReportMetric(float64(blobs)/elapsed.Seconds(), "blobs/s")
}

// BenchmarkTouch: the cache-hit path with 100k entries, each Touch newer than
// the last, so every call moves an entry to the front.
func BenchmarkTouch(b *testing.B) {
	keys := benchKeys(100_000)
	e := benchEvictor(b, keys, Options{MaxBytes: 1 << 40})
	now := t0.Add(time.Hour)
	i := 0
	for b.Loop() {
		e.Touch(keys[i%len(keys)], now.Add(time.Duration(i)))
		i++
	}
}

// BenchmarkTouchParallel: as BenchmarkTouch from GOMAXPROCS goroutines, with
// time.Now() per call as the cache would pass it.
func BenchmarkTouchParallel(b *testing.B) {
	keys := benchKeys(100_000)
	e := benchEvictor(b, keys, Options{MaxBytes: 1 << 40})
	var seed atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(7919))
		for pb.Next() {
			e.Touch(keys[i%len(keys)], time.Now())
			i++
		}
	})
}

// digestKeys returns n keys shaped like the cache's ("sha256:" and 64 hex).
func digestKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		sum := sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(i)))
		keys[i] = "sha256:" + hex.EncodeToString(sum[:])
	}
	return keys
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEvictPass1M: the scale. 1M one-byte blobs fill a budget
// of 1M bytes (high watermark 0.95, low 0.9): one pass frees 10 % of the
// budget, 100,000 deletions through a no-op Deleter. cpu-ms/pass is the
// process's CPU time for the pass (the bookkeeping; deletion is the
// filesystem's). heap-B/entry is the evictor's live heap per entry after
// Load, keys included.
func BenchmarkEvictPass1M(b *testing.B) {
	const n = 1_000_000
	keys := digestKeys(n)
	var cpu time.Duration
	var perEntry float64
	passes := 0
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		e := benchEvictor(b, keys, Options{MaxBytes: n, HighWatermark: 0.95, LowWatermark: 0.9})
		runtime.GC()
		runtime.ReadMemStats(&after)
		// The keys themselves exist before Load (the cache hands them in).
		perEntry = float64(after.HeapAlloc-before.HeapAlloc) / n
		b.StartTimer()
		c0 := cpuTime(b)
		res, err := e.EvictNow(context.Background())
		cpu += cpuTime(b) - c0
		passes++
		if err != nil || res.Blobs != 100_000 {
			b.Fatalf("%+v %v", res, err)
		}
		runtime.KeepAlive(e)
	}
	b.ReportMetric(float64(cpu.Milliseconds())/float64(passes), "cpu-ms/pass")
	b.ReportMetric(perEntry, "heap-B/entry")
}

// BenchmarkTouch1M: a hit's bookkeeping with 1M entries (every call moves
// an entry to the front). Run with -benchmem: 0 allocs/op.
func BenchmarkTouch1M(b *testing.B) {
	keys := digestKeys(1_000_000)
	e := benchEvictor(b, keys, Options{MaxBytes: 1 << 40})
	now := t0.Add(time.Hour)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		e.Touch(keys[(i*7919)%len(keys)], now.Add(time.Duration(i)))
		i++
	}
}
