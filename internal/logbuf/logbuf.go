package logbuf

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	// DefaultInterval: the first line after a quiet interval is written at
	// once; lines that follow it within the interval wait for its end.
	DefaultInterval = 200 * time.Millisecond
	// DefaultKick: a buffer this full is written at once, not at the next tick.
	DefaultKick = 64 << 10
	// DefaultMax: a buffer this full makes writers wait until it is
	// written (backpressure: a stalled output slows the logging, it never
	// drops lines or grows memory without bound).
	DefaultMax = 4 << 20
)

// Options configure a Writer; zero values take the defaults.
type Options struct {
	Interval  time.Duration // the longest a line waits in memory; at most one write per Interval unless Kick
	Kick, Max int
}

// Writer buffers whole writes (a log handler writes one line per Write) and
// writes them to its output in order. It is safe for concurrent use.
type Writer struct {
	out  io.Writer
	opts Options

	mu     sync.Mutex // guards buf and closed
	buf    []byte
	closed bool

	outMu sync.Mutex // serialises writes to out; guards spare
	spare []byte

	lastFlush atomic.Int64 // Unix nanoseconds

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// New starts a Writer over out.
func New(out io.Writer, o Options) *Writer {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Kick <= 0 {
		o.Kick = DefaultKick
	}
	if o.Max <= 0 {
		o.Max = DefaultMax
	}
	w := &Writer{out: out, opts: o, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go w.loop()
	return w
}

// Write copies p into the buffer; it writes to the output itself only when
// the buffer is full, or after Close. It never fails: an error of the
// output is the output's (as with an unbuffered log).
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		w.outMu.Lock()
		defer w.outMu.Unlock()
		w.out.Write(p)
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	n := len(w.buf)
	w.mu.Unlock()
	if n >= w.opts.Max {
		w.Flush()
	} else if n >= w.opts.Kick || n == len(p) && time.Now().UnixNano()-w.lastFlush.Load() >= int64(w.opts.Interval) {
		// Only the first line into an empty buffer asks the clock: any
		// later one finds that line's kick pending or the ticker due.
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// WritesWhole reports that concurrent Writes are safe and each lands whole
// and unbroken (internal/logline then takes no lock of its own).
func (w *Writer) WritesWhole() bool { return true }

// Flush writes everything buffered so far.
func (w *Writer) Flush() error {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	w.lastFlush.Store(time.Now().UnixNano())
	w.mu.Lock()
	b := w.buf
	w.buf = w.spare[:0]
	w.mu.Unlock()
	if len(b) == 0 {
		w.spare = b
		return nil
	}
	_, err := w.out.Write(b)
	if cap(b) <= w.opts.Max {
		w.spare = b[:0] // reused; one burst's worth at most
	} else {
		w.spare = nil
	}
	return err
}

func (w *Writer) loop() {
	defer close(w.done)
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-w.kick:
		case <-w.stop:
			return
		}
		w.Flush()
	}
}

// Close writes what is buffered and stops the goroutine; later writes go
// straight to the output, after everything written before. It does not
// close the output.
func (w *Writer) Close() error {
	w.once.Do(func() {
		close(w.stop)
		<-w.done
	})
	w.outMu.Lock()
	defer w.outMu.Unlock()
	w.mu.Lock()
	w.closed = true
	b := w.buf
	w.buf = nil
	w.mu.Unlock()
	if len(b) == 0 {
		return nil
	}
	_, err := w.out.Write(b)
	return err
}
