package proxy

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// The listener's guards. fasthttp's serve loop ends on any accept error
// that is not a timeout, so running out of descriptors (EMFILE) would end
// the server; guardedListener retries temporary accept errors itself with
// net/http's backoff (5ms doubling to 1s) and logs a warning once per
// burst. It also caps open connections, in all and per client address, so
// that one host cannot take every descriptor: an excess connection gets a
// registry JSON refusal (503 over the total cap, 429 over the per-address
// cap, as fasthttp's own caps answer) and is closed; the server carries
// on. fasthttp's MaxConnsPerIP is not used because its connection wrapper
// hides the TCP connection's ReadFrom, which turns off sendfile for hits.

// Defaults for Options.MaxConnections and MaxConnectionsPerIP.
const (
	// defaultMaxConnections caps the automatic total: half the descriptor
	// limit, the other half being left for cache files, fills and upstream
	// connections, and never more than this.
	defaultMaxConnections = 8192
	// A client address may hold a quarter of the total by default.
	perIPShare = 4
	// minMaxConnections keeps a tiny descriptor limit usable.
	minMaxConnections = 16
)

// Accept backoff, as net/http's Server.Serve.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// connCaps resolves the configured caps: 0 takes the default, a negative
// value means no cap (returned as 0).
func connCaps(maxConns, perIP int, nofile uint64) (int, int) {
	if maxConns == 0 {
		maxConns = defaultMaxConnections
		if nofile > 0 && nofile/2 < uint64(maxConns) {
			maxConns = max(int(nofile/2), minMaxConnections)
		}
	}
	if perIP == 0 {
		perIP = max(maxConns/perIPShare, 1)
		if maxConns < 0 {
			perIP = defaultMaxConnections / perIPShare
		}
	}
	return max(maxConns, 0), max(perIP, 0)
}

// connLimiter counts open client connections, in all and per address. It
// admits a connection at accept and forgets it when fasthttp reports it
// closed (Server.ConnState).
type connLimiter struct {
	maxConns, maxPerIP int // 0: no cap
	tls                bool
	log                *slog.Logger
	m                  *guardMetrics

	mu    sync.Mutex
	open  map[net.Conn]string // accepted connection → client address
	perIP map[string]int
	// refusals rate-limits the refusal warning.
	refusals oncePerMinute
}

func newConnLimiter(maxConns, maxPerIP int, isTLS bool, log *slog.Logger, m *guardMetrics) *connLimiter {
	return &connLimiter{
		maxConns: maxConns, maxPerIP: maxPerIP, tls: isTLS, log: log, m: m,
		open: map[net.Conn]string{}, perIP: map[string]int{},
	}
}

// Errors answered to refused connections (see toWire).
var (
	errTooManyConnections      = errors.New("too many connections to this mirror")
	errTooManyConnectionsPerIP = errors.New("too many connections from this address")
)

// admit counts c in, or refuses it (answering and closing it) when a cap
// is reached; it reports whether c may be served.
func (l *connLimiter) admit(c net.Conn) bool {
	ip := clientAddr(c)
	l.mu.Lock()
	var refuse error
	switch {
	case l.maxConns > 0 && len(l.open) >= l.maxConns:
		refuse = errTooManyConnections
	case l.maxPerIP > 0 && l.perIP[ip] >= l.maxPerIP:
		refuse = errTooManyConnectionsPerIP
	default:
		l.open[c] = ip
		l.perIP[ip]++
		l.m.openConns.Set(float64(len(l.open)))
	}
	l.mu.Unlock()
	if refuse == nil {
		return true
	}
	limit := "max_connections"
	if refuse == errTooManyConnectionsPerIP {
		limit = "max_connections_per_ip"
	}
	l.m.refusedConns.WithLabelValues(limit).Inc()
	if l.refusals.due(time.Now()) {
		l.log.Warn("refusing connections over the cap (logged once a minute; see regmirror_connections_refused_total)",
			"limit", limit, "max_connections", l.maxConns, "max_connections_per_ip", l.maxPerIP, "client", ip)
	}
	l.refuse(c, refuse)
	return false
}

// refuse answers c with a registry error and closes it. The answer goes
// out before any request is read: the socket's send buffer is empty, so
// the write does not block (a short deadline makes sure). A TLS client
// is only closed: a plain answer would be garbage to it.
func (l *connLimiter) refuse(c net.Conn, err error) {
	defer c.Close()
	if l.tls {
		return
	}
	w := toWire(err, resourceNone)
	body, _ := json.Marshal(wireBody{Errors: []wireEntry{{Code: w.Code, Message: w.Message, Detail: w.Detail}}})
	msg := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"+
		"Docker-Distribution-API-Version: registry/2.0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s",
		w.Status, http.StatusText(w.Status), len(body), body) // Retry-After: a place frees up quickly
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = c.Write([]byte(msg))
}

// connState is fasthttp's ConnState hook: a closed (or hijacked)
// connection no longer counts.
func (l *connLimiter) connState(c net.Conn, state fasthttp.ConnState) {
	if state != fasthttp.StateClosed && state != fasthttp.StateHijacked {
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ip, ok := l.open[c]
	if !ok {
		return
	}
	delete(l.open, c)
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
	l.m.openConns.Set(float64(len(l.open)))
}

// clientAddr is the IP a connection comes from (the whole address if it
// has no host part).
func clientAddr(c net.Conn) string {
	a := c.RemoteAddr()
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

// guardedListener is the listener fasthttp serves: temporary accept errors
// are retried here, and connections over a cap are refused here.
type guardedListener struct {
	net.Listener
	lim *connLimiter
	// deadlineSlack > 0 wraps every connection in a lazyDeadlineConn.
	deadlineSlack time.Duration
	now           func() time.Time // nil: time.Now
	// Accept is called from fasthttp's one serve loop: the burst state
	// needs no lock. A burst is a run of accept errors less than
	// burstGap apart: while the backlog drains, accepted connections take
	// the descriptors freed, so errors and accepts alternate for a while;
	// that is one burst, one warning.
	burstErrors int
	burstStart  time.Time
	lastError   time.Time
	recovered   bool // the end of this burst was logged
}

const burstGap = time.Minute

func (l *guardedListener) clock() time.Time {
	if l.now != nil {
		return l.now()
	}
	return time.Now()
}

func (l *guardedListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !temporaryAcceptError(err) {
				return nil, err
			}
			delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
			l.acceptFailed(err, delay)
			time.Sleep(delay)
			continue
		}
		if delay > 0 {
			l.lim.m.acceptBackoff.Set(0)
			if !l.recovered {
				l.recovered = true
				l.lim.log.Info("accepting connections again", "errors", l.burstErrors, "after_s", l.clock().Sub(l.burstStart).Round(time.Millisecond).Seconds())
			}
		}
		delay = 0
		if l.deadlineSlack > 0 {
			c = newLazyDeadlineConn(c, l.deadlineSlack)
		}
		if l.lim.admit(c) {
			return c, nil
		}
	}
}

// acceptFailed counts a temporary accept error; the first of a burst is
// logged as a warning, the rest only counted.
func (l *guardedListener) acceptFailed(err error, delay time.Duration) {
	l.lim.m.acceptErrors.Inc()
	l.lim.m.acceptBackoff.Set(delay.Seconds())
	now := l.clock()
	if l.lastError.IsZero() || now.Sub(l.lastError) > burstGap {
		l.burstErrors, l.burstStart, l.recovered = 0, now, false
		l.lim.log.Warn("cannot accept connections, retrying with a backoff up to "+acceptBackoffMax.String()+
			" (logged once per burst; see regmirror_accept_errors_total; raise the descriptor limit or lower server.max_connections)",
			"err", err, "open_connections", l.lim.openCount())
	}
	l.lastError = now
	l.burstErrors++
}

func (l *connLimiter) openCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.open)
}

// temporaryAcceptError reports whether an accept error will likely pass:
// out of descriptors (process or system), out of buffers or memory, a
// connection aborted before it was accepted, or a timeout.
func temporaryAcceptError(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS, syscall.ENOMEM, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// describeCaps is how the caps read in the startup log.
func describeCaps(n int) string {
	if n <= 0 {
		return "none"
	}
	return strconv.Itoa(n)
}
