package proxy

import (
	"io"
	"net"
	"sync"
	"time"
)

// Connection deadlines, passed on lazily. fasthttp moves a connection's
// deadlines three times per request (the idle timeout before it waits for
// a request, the read timeout once the first byte is in, the write timeout
// before the answer), each a clock read and a runtime timer update: ~5 %
// of a warm request's CPU (bench/smallreq.sh's "timeouts" column). Most of
// those moves govern no wait at all: a request that arrives in one read is
// parsed from the buffer, and on a busy connection the idle deadline moves
// by a few milliseconds each time.
//
// lazyDeadlineConn remembers the deadline asked for and hands it to the
// connection only when a read (or write) is about to run under it and the
// deadline in force is off by more than slack. A deadline asked for while
// a read or write is under way is handed on at once, so that it can still
// cut that call short. Every read and write therefore runs under the
// deadline fasthttp asked for, give or take slack: 1/64 of the shortest
// configured timeout (under a second with the defaults).
type lazyDeadlineConn struct {
	net.Conn
	slack int64 // nanoseconds

	mu          sync.Mutex
	read, write deadline
}

// deadline is one direction's: what was asked for and what the connection
// has (Unix nanoseconds, 0 for none), how many calls are under way, and
// the connection's setter for it.
type deadline struct {
	want, inForce int64
	busy          int
	hand          func(time.Time) error
}

// deadlineSlack is how far a connection's deadline may be from the one
// asked for, given the server's timeouts.
func deadlineSlack(timeouts ...time.Duration) time.Duration {
	shortest := time.Duration(0)
	for _, t := range timeouts {
		if t > 0 && (shortest == 0 || t < shortest) {
			shortest = t
		}
	}
	return shortest / 64
}

func newLazyDeadlineConn(c net.Conn, slack time.Duration) *lazyDeadlineConn {
	return &lazyDeadlineConn{Conn: c, slack: int64(slack),
		read: deadline{hand: c.SetReadDeadline}, write: deadline{hand: c.SetWriteDeadline}}
}

// unixNano is t as deadline holds it: 0 for none, and the Unix epoch
// itself (a deadline long past) as 1.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	if n := t.UnixNano(); n != 0 {
		return n
	}
	return 1
}

// sync hands d's wanted deadline to the connection if the one in force is
// off by more than slack (or one of them is none). c.mu is held.
func (c *lazyDeadlineConn) sync(d *deadline) error {
	off := d.want - d.inForce
	if (d.want == 0) == (d.inForce == 0) && off <= c.slack && off >= -c.slack {
		return nil
	}
	t := time.Time{}
	if d.want != 0 {
		t = time.Unix(0, d.want)
	}
	if err := d.hand(t); err != nil {
		return err
	}
	d.inForce = d.want
	return nil
}

func (c *lazyDeadlineConn) ask(d *deadline, t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d.want = unixNano(t)
	if d.busy > 0 {
		return c.sync(d)
	}
	return nil
}

func (c *lazyDeadlineConn) begin(d *deadline) {
	c.mu.Lock()
	d.busy++
	// An error here is the connection's (closed): the call that follows
	// reports it.
	_ = c.sync(d)
	c.mu.Unlock()
}

func (c *lazyDeadlineConn) end(d *deadline) {
	c.mu.Lock()
	d.busy--
	c.mu.Unlock()
}

func (c *lazyDeadlineConn) SetReadDeadline(t time.Time) error  { return c.ask(&c.read, t) }
func (c *lazyDeadlineConn) SetWriteDeadline(t time.Time) error { return c.ask(&c.write, t) }

func (c *lazyDeadlineConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *lazyDeadlineConn) Read(p []byte) (int, error) {
	c.begin(&c.read)
	defer c.end(&c.read)
	return c.Conn.Read(p)
}

func (c *lazyDeadlineConn) Write(p []byte) (int, error) {
	c.begin(&c.write)
	defer c.end(&c.write)
	return c.Conn.Write(p)
}

// ReadFrom keeps the TCP connection's own ReadFrom reachable: it is how a
// cached file goes out by sendfile.
func (c *lazyDeadlineConn) ReadFrom(r io.Reader) (int64, error) {
	c.begin(&c.write)
	defer c.end(&c.write)
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}
