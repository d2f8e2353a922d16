package proxy

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// countingConn is a connection whose reads and writes succeed at once and
// which counts the deadlines handed to it.
type countingConn struct {
	net.Conn
	readSets, writeSets int
	read, write         time.Time
	readFroms           int
}

func (c *countingConn) Read(p []byte) (int, error)  { return len(p), nil }
func (c *countingConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *countingConn) SetReadDeadline(t time.Time) error {
	c.readSets++
	c.read = t
	return nil
}
func (c *countingConn) SetWriteDeadline(t time.Time) error {
	c.writeSets++
	c.write = t
	return nil
}
func (c *countingConn) ReadFrom(r io.Reader) (int64, error) {
	c.readFroms++
	return io.Copy(io.Discard, r)
}

// fasthttp's sequence on a busy keep-alive connection (idle deadline, a
// read, the read deadline, the write deadline, a write) hands the
// connection a deadline only when the one in force is off by more than
// the slack; a request that needs a second read gets its read deadline.
func TestLazyDeadlinesFollowFasthttp(t *testing.T) {
	const read, write, idle = time.Minute, time.Hour, 2 * time.Minute
	slack := deadlineSlack(read, write, idle)
	if slack != read/64 {
		t.Fatalf("slack %v, want %v", slack, read/64)
	}
	inner := &countingConn{}
	c := newLazyDeadlineConn(inner, slack)
	now := time.Unix(1_700_000_000, 0)
	request := func(reads int) {
		c.SetReadDeadline(now.Add(idle))
		c.Read(make([]byte, 1))
		c.SetReadDeadline(now.Add(read))
		for range reads - 1 {
			c.Read(make([]byte, 1))
		}
		c.SetWriteDeadline(now.Add(write))
		c.Write([]byte("HTTP/1.1 200 OK\r\n\r\n"))
	}
	for range 100 { // 100 requests within 100 ms
		request(1)
		now = now.Add(time.Millisecond)
	}
	if inner.readSets != 1 || inner.writeSets != 1 {
		t.Fatalf("100 requests in 100 ms set %d read and %d write deadlines, want 1 and 1", inner.readSets, inner.writeSets)
	}
	if want := now.Add(-100 * time.Millisecond).Add(idle); !inner.read.Equal(want) {
		t.Fatalf("read deadline %v, want the first idle deadline %v", inner.read, want)
	}

	// The deadlines in force stay within the slack of those asked for.
	now = now.Add(slack + time.Millisecond)
	request(1)
	if inner.readSets != 2 || inner.writeSets != 2 {
		t.Fatalf("after the slack: %d read and %d write deadlines set, want 2 and 2", inner.readSets, inner.writeSets)
	}
	if want := now.Add(idle); !inner.read.Equal(want) {
		t.Fatalf("read deadline %v, want %v", inner.read, want)
	}

	// A request whose header takes a second read reads it under the read
	// timeout, not the idle one.
	now = now.Add(time.Millisecond)
	request(2)
	if inner.readSets != 3 || !inner.read.Equal(now.Add(read)) {
		t.Fatalf("second read of a request: %d read deadlines set, in force %v, want 3 and %v", inner.readSets, inner.read, now.Add(read))
	}

	// Clearing a deadline is handed on.
	c.SetWriteDeadline(time.Time{})
	c.Write(nil)
	if !inner.write.IsZero() {
		t.Fatalf("write deadline %v after clearing it", inner.write)
	}

	// A deadline at the Unix epoch (long past: "stop now") is not "none".
	c.SetReadDeadline(time.Unix(0, 0))
	c.Read(make([]byte, 1))
	if inner.read.IsZero() || !inner.read.Before(time.Unix(1, 0)) {
		t.Fatalf("read deadline %v after asking for the Unix epoch", inner.read)
	}
}

// With two reads under way, one ending does not end the other's claim: a
// deadline asked for then is handed on at once, to cut the read still
// waiting.
func TestLazyDeadlinesOverlappingCalls(t *testing.T) {
	inner := &countingConn{}
	c := newLazyDeadlineConn(inner, time.Second)
	c.begin(&c.read)
	c.begin(&c.read)
	c.end(&c.read)
	at := time.Now().Add(time.Minute)
	c.SetReadDeadline(at)
	if !inner.read.Equal(at) {
		t.Fatalf("deadline in force %v while a read waits, want %v at once", inner.read, at)
	}
	c.end(&c.read)
}

// The server's listener wraps every connection when it has timeouts.
func TestListenerWrapsForLazyDeadlines(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	lim := newConnLimiter(0, 0, false, slog.New(slog.DiscardHandler), newGuardMetrics(nil))
	ln := &guardedListener{Listener: inner, lim: lim, deadlineSlack: deadlineSlack(time.Minute)}
	client, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if lc, ok := c.(*lazyDeadlineConn); !ok || lc.slack != int64(time.Minute/64) {
		t.Fatalf("accepted %T, want a lazyDeadlineConn with 1/64 of a minute's slack", c)
	}
}

// A read that waits is cut by its deadline, a deadline asked for between
// calls by the next call, and a deadline asked for while a read waits cuts
// that read (all as on a plain connection).
func TestLazyDeadlinesCutReads(t *testing.T) {
	c, client := lazyOverTCP(t)

	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v, want a timeout", err)
	}

	// A far deadline is handed on and a byte read under it; a near one
	// asked for afterwards is only remembered, until the next read.
	c.SetReadDeadline(time.Now().Add(time.Hour))
	client.Write([]byte("x"))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the deadline was brought forward: %v, want a timeout", err)
	}

	c.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		errc <- err
	}()
	eventually(t, "the read to be under way", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.read.busy > 0
	})
	c.SetReadDeadline(time.Now())
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("waiting read: %v, want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a deadline asked for during a read did not cut it")
	}
}

// A write to a client that reads nothing is cut by the write deadline.
func TestLazyDeadlinesCutWrites(t *testing.T) {
	c, _ := lazyOverTCP(t)
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	errc := make(chan error, 1)
	go func() {
		chunk := []byte(strings.Repeat("x", 1<<20))
		var err error
		for i := 0; i < 1024 && err == nil; i++ { // far more than the socket buffers hold
			_, err = c.Write(chunk)
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("write to a stalled client: %v, want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		c.Close() // ends the writer
		t.Fatal("a write to a stalled client was not cut by its deadline")
	}
}

// The connection's own ReadFrom (sendfile for a cached file) stays in use.
func TestLazyDeadlinesKeepReadFrom(t *testing.T) {
	inner := &countingConn{}
	c := newLazyDeadlineConn(inner, time.Second)
	c.SetWriteDeadline(time.Now().Add(time.Hour))
	if _, err := io.Copy(c, struct{ io.Reader }{strings.NewReader("layer")}); err != nil {
		t.Fatal(err)
	}
	if inner.readFroms != 1 || inner.writeSets != 1 {
		t.Fatalf("ReadFrom calls %d, write deadlines %d; want 1 and 1", inner.readFroms, inner.writeSets)
	}
	var _ io.ReaderFrom = c
}

// lazyOverTCP is the server side of a loopback TCP connection, wrapped
// with a 1 ms slack, and its client.
func lazyOverTCP(t *testing.T) (*lazyDeadlineConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := newLazyDeadlineConn(server, time.Millisecond)
	t.Cleanup(func() { c.Close() })
	return c, client
}
