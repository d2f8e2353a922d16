package logbuf

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// sink records what reaches the output, one entry per Write.
type sink struct {
	mu     sync.Mutex
	writes []string
	wrote  chan struct{}
}

func newSink() *sink { return &sink{wrote: make(chan struct{}, 100)} }

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.writes = append(s.writes, string(p))
	s.mu.Unlock()
	select {
	case s.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (s *sink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.writes, "")
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.writes)
}

// TestCloseWritesEverything: lines buffered (the tick far away) reach the
// output at Close, in order, in one write; a line after Close goes straight
// through.
func TestCloseWritesEverything(t *testing.T) {
	out := newSink()
	w := New(out, Options{Interval: time.Hour})
	w.lastFlush.Store(time.Now().UnixNano()) // not quiet: no line goes out at once
	for i := range 100 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	if out.count() != 0 {
		t.Fatalf("%d writes before Close; want the lines buffered", out.count())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	for i := range 100 {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if out.String() != want.String() || out.count() != 1 {
		t.Fatalf("after Close: %d writes, %q", out.count(), out.String())
	}
	fmt.Fprintln(w, "late")
	if !strings.HasSuffix(out.String(), "line 99\nlate\n") {
		t.Fatalf("a write after Close: %q", out.String())
	}
}

// TestTickWrites: without Close, a line reaches the output by the tick.
func TestTickWrites(t *testing.T) {
	out := newSink()
	w := New(out, Options{Interval: time.Millisecond})
	defer w.Close()
	fmt.Fprintln(w, "hello")
	select {
	case <-out.wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("the line was never written")
	}
	if out.String() != "hello\n" {
		t.Fatalf("%q", out.String())
	}
}

// TestFullBufferWritesAtOnce: a buffer at Max is written by the writer
// itself (backpressure), with no tick and no Close.
func TestFullBufferWritesAtOnce(t *testing.T) {
	out := newSink()
	w := New(out, Options{Interval: time.Hour, Kick: 1 << 30, Max: 10})
	defer w.Close()
	w.lastFlush.Store(time.Now().UnixNano())
	w.Write([]byte("0123456789"))
	if out.String() != "0123456789" {
		t.Fatalf("%q", out.String())
	}
}

// TestConcurrentWritesKeepLines: whole writes from many goroutines arrive
// whole, none lost.
func TestConcurrentWritesKeepLines(t *testing.T) {
	out := newSink()
	w := New(out, Options{Interval: time.Microsecond, Kick: 64, Max: 4096})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				fmt.Fprintf(w, "g%d-%d\n", g, i)
			}
		}()
	}
	wg.Wait()
	w.Close()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 8*500 {
		t.Fatalf("%d lines, want %d", len(lines), 8*500)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		seen[l] = true
	}
	if len(seen) != 8*500 {
		t.Fatalf("%d distinct lines, want %d", len(seen), 8*500)
	}
}

// TestQuietLineGoesOutAtOnce: the first line after a quiet interval is
// written at once; the next, within the interval, waits in memory.
func TestQuietLineGoesOutAtOnce(t *testing.T) {
	out := newSink()
	w := New(out, Options{Interval: time.Hour})
	defer w.Close()
	w.lastFlush.Store(0) // quiet for ever
	fmt.Fprintln(w, "first")
	select {
	case <-out.wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("the first line waited")
	}
	fmt.Fprintln(w, "second")
	if out.String() != "first\n" {
		t.Fatalf("%q; want the second line buffered", out.String())
	}
}
