package eviction

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

type nopDeleter struct{}

func (nopDeleter) Delete(string) error { return nil }

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "sha256:" + strconv.FormatInt(int64(i)*2654435761, 16)
	}
	return keys
}

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
