package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/internal/testlog"
)

// fakeUpstream is a configured registry that is never dialled.
type fakeUpstream struct{ Upstream }

func (fakeUpstream) Name() string                  { return "docker.io" }
func (fakeUpstream) Repository(name string) string { return name }

// panicStore panics on every blob lookup: a stand-in for any bug.
type panicStore struct{ Store }

func (panicStore) Open(digest.Digest) (*os.File, cache.BlobInfo, error) {
	panic("a bug in the blob path")
}

// guardServer is a Server with no upstream to speak of, serving on a
// loopback port, with its metrics and log at hand.
type guardServer struct {
	*Server
	addr string
	reg  *prometheus.Registry
	log  *testlog.Buffer
}

func startGuardServer(t *testing.T, store Store, mutate ...func(*Options)) *guardServer {
	t.Helper()
	g := &guardServer{reg: prometheus.NewRegistry(), log: &testlog.Buffer{}}
	o := Options{
		Registries: []Upstream{fakeUpstream{}},
		Store:      store,
		Metrics:    g.reg,
		Logger:     slog.New(slog.NewTextHandler(g.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, m := range mutate {
		m(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	g.Server = s
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx) // not t.Context(): it is cancelled before cleanups run
		ln.Close()      // in case Shutdown ran before Serve had the listener
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return g
}

// rawExchange writes raw bytes on a new connection and reads one response.
func rawExchange(t *testing.T, addr string, raw []byte) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if len(raw) > 0 {
		// The server may answer and close before it has read everything
		// (a header over the limit): a write error is not the test's.
		go c.Write(raw)
	}
	return readResponse(t, c)
}

func readResponse(t *testing.T, c net.Conn) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// wantJSONError checks that body is one registry error with code.
func wantJSONError(t *testing.T, what string, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("%s: status %d, want %d (body %q)", what, resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	for _, h := range []string{"Cache-Control", "ETag", "Docker-Content-Digest"} {
		if v := resp.Header.Get(h); v != "" {
			t.Errorf("%s: the error carries %s: %s, set for the body it replaced", what, h, v)
		}
	}
	var e wireBody
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != code || e.Errors[0].Message == "" {
		t.Errorf("%s: body %q, want one registry error %s", what, body, code)
	}
}

func get(t *testing.T, addr, path string) (*http.Response, []byte) {
	t.Helper()
	return rawExchange(t, addr, []byte("GET "+path+" HTTP/1.1\r\nHost: mirror\r\n\r\n"))
}

// TestHandlerPanicIsAnswered500: a panic in a handler is answered 500 in
// registry JSON, logged with its stack and counted; the server goes on.
func TestHandlerPanicIsAnswered500(t *testing.T) {
	g := startGuardServer(t, panicStore{})
	blob := "/v2/library/alpine/blobs/sha256:" + strings.Repeat("a", 64)
	for i := 0; i < 3; i++ {
		resp, body := get(t, g.addr, blob)
		wantJSONError(t, "GET after a panic", resp, body, http.StatusInternalServerError, "UNKNOWN")
	}
	resp, body := get(t, g.addr, "/healthz")
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("after panics: /healthz %d %q", resp.StatusCode, body)
	}
	if n := counterValue(t, g.guard.panics); n != 3 {
		t.Errorf("regmirror_panics_total = %v, want 3", n)
	}
	logs := g.log.String()
	if !strings.Contains(logs, "a bug in the blob path") || !strings.Contains(logs, "guard.go") || !strings.Contains(logs, "serveBlob") {
		t.Errorf("the panic was not logged with its stack:\n%s", logs)
	}
	if !strings.Contains(logs, "status=500") {
		t.Errorf("the request log does not say 500:\n%s", logs)
	}
}

// TestHTTPLayerErrorsAreJSON: what fasthttp refuses before any handler runs
// is registry JSON too, and a header of real-token size is accepted.
func TestHTTPLayerErrorsAreJSON(t *testing.T) {
	g := startGuardServer(t, panicStore{})

	token := "Bearer " + strings.Repeat("x", 4200) // the 4.1 KiB token
	resp, body := rawExchange(t, g.addr, []byte("GET /v2/ HTTP/1.1\r\nHost: mirror\r\nAuthorization: "+token+"\r\n\r\n"))
	if resp.StatusCode != http.StatusOK || string(body) != "{}" {
		t.Errorf("4.2 KiB Authorization: %d %q, want 200 {}", resp.StatusCode, body)
	}
	big := "Bearer " + strings.Repeat("x", 30<<10)
	resp, body = rawExchange(t, g.addr, []byte("GET /v2/ HTTP/1.1\r\nHost: mirror\r\nAuthorization: "+big+"\r\n\r\n"))
	if resp.StatusCode != http.StatusOK {
		t.Errorf("30 KiB Authorization: %d %q, want 200", resp.StatusCode, body)
	}

	huge := "GET /v2/ HTTP/1.1\r\nHost: mirror\r\nX-Junk: " + strings.Repeat("y", 100<<10) + "\r\n\r\n"
	resp, body = rawExchange(t, g.addr, []byte(huge))
	wantJSONError(t, "100 KiB header", resp, body, http.StatusRequestHeaderFieldsTooLarge, "UNSUPPORTED")

	resp, body = rawExchange(t, g.addr, []byte("\x16\x03\x01garbage that is no request\r\n\r\n"))
	wantJSONError(t, "garbage", resp, body, http.StatusBadRequest, "UNSUPPORTED")

	resp, body = rawExchange(t, g.addr, []byte("PUT /v2/a/blobs/uploads/1 HTTP/1.1\r\nHost: mirror\r\nContent-Length: 1000000\r\n\r\n"+strings.Repeat("z", 100)))
	wantJSONError(t, "large body", resp, body, http.StatusRequestEntityTooLarge, "UNSUPPORTED")

	for _, reason := range []string{"header_too_large", "malformed", "body_too_large"} {
		if n := counterValue(t, g.guard.httpErrors.WithLabelValues(reason)); n != 1 {
			t.Errorf("regmirror_http_errors_total{reason=%q} = %v, want 1", reason, n)
		}
	}
	resp, _ = get(t, g.addr, "/healthz")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after hostile requests: /healthz %d", resp.StatusCode)
	}
}

// TestHTTPLayerTimeoutIsJSON: a request that does not arrive within the
// read timeout is answered 408 in registry JSON.
func TestHTTPLayerTimeoutIsJSON(t *testing.T) {
	g := startGuardServer(t, panicStore{}, func(o *Options) { o.ReadTimeout = 200 * time.Millisecond })
	resp, body := rawExchange(t, g.addr, []byte("GET /v2/ HTTP/1.1\r\nHost: mir"))
	wantJSONError(t, "slow header", resp, body, http.StatusRequestTimeout, "UNSUPPORTED")
}

// TestConnLimiter: connections over the per-address or the total cap are
// answered in registry JSON and closed; those admitted are served, and a
// closed connection frees its place.
func TestConnLimiter(t *testing.T) {
	for _, tt := range []struct {
		name          string
		total, perIP  int
		status        int
		code, counter string
	}{
		{"per address", 100, 3, http.StatusTooManyRequests, "TOOMANYREQUESTS", "max_connections_per_ip"},
		{"total", 3, -1, http.StatusServiceUnavailable, "UNAVAILABLE", "max_connections"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := startGuardServer(t, panicStore{}, func(o *Options) {
				o.MaxConnections, o.MaxConnectionsPerIP = tt.total, tt.perIP
			})
			var held []net.Conn
			for i := 0; i < 3; i++ {
				c, err := net.Dial("tcp", g.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				held = append(held, c)
			}
			// The held connections are served (which also proves they were
			// admitted before the next one is dialled).
			for _, c := range held {
				io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: mirror\r\n\r\n")
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if resp, _ := readResponse(t, c); resp.StatusCode != http.StatusOK {
					t.Fatalf("admitted connection: %d", resp.StatusCode)
				}
			}
			for i := 0; i < 5; i++ {
				resp, body := rawExchange(t, g.addr, nil)
				wantJSONError(t, "one connection too many", resp, body, tt.status, tt.code)
			}
			if n := counterValue(t, g.guard.refusedConns.WithLabelValues(tt.counter)); n != 5 {
				t.Errorf("regmirror_connections_refused_total{limit=%q} = %v, want 5", tt.counter, n)
			}
			if w := strings.Count(g.log.String(), "refusing connections over the cap"); w != 1 {
				t.Errorf("%d refusal warnings for 5 refusals, want 1", w)
			}
			held[0].Close()
			eventually(t, "the closed connection to be forgotten", func() bool { return g.conns.openCount() < 3 })
			resp, body := get(t, g.addr, "/healthz")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("after a place was freed: %d %q", resp.StatusCode, body)
			}
		})
	}
}

func TestConnCaps(t *testing.T) {
	for _, tt := range []struct {
		max, perIP       int
		nofile           uint64
		wantMax, wantPer int
	}{
		{0, 0, 0, 8192, 2048},
		{0, 0, 1 << 20, 8192, 2048},
		{0, 0, 1024, 512, 128},
		{0, 0, 20, 16, 4},
		{100, 0, 1024, 100, 25},
		{100, 7, 1024, 100, 7},
		{-1, 0, 1024, 0, 2048},
		{-1, -1, 1024, 0, 0},
	} {
		gotMax, gotPer := connCaps(tt.max, tt.perIP, tt.nofile)
		if gotMax != tt.wantMax || gotPer != tt.wantPer {
			t.Errorf("connCaps(%d, %d, %d) = %d, %d, want %d, %d", tt.max, tt.perIP, tt.nofile, gotMax, gotPer, tt.wantMax, tt.wantPer)
		}
	}
}

// flakyListener fails Accept with err n times, then accepts from the real
// listener.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
	err   error
	calls []time.Time
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls = append(l.calls, time.Now())
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", l.err)}
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// TestAcceptBackoff: temporary accept errors are retried with a growing
// delay and warned about once per burst; other errors end Accept.
func TestAcceptBackoff(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	logs := &testlog.Buffer{}
	lim := newConnLimiter(0, 0, false, slog.New(slog.NewTextHandler(logs, nil)), newGuardMetrics(nil))
	now := time.Now()
	ln := &guardedListener{lim: lim, now: func() time.Time { return now }}
	for i, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.EMFILE} {
		if i < 3 {
			now = now.Add(2 * burstGap) // a new burst; the fourth continues the third
		}
		fl := &flakyListener{Listener: inner, fails: 6, err: errno}
		ln.Listener = fl
		go func() {
			c, err := net.Dial("tcp", inner.Addr().String())
			if err == nil {
				defer c.Close()
				io.Copy(io.Discard, c)
			}
		}()
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("%v: Accept = %v, want a connection after the errors", errno, err)
		}
		c.Close()
		lim.connState(c, 1<<10) // not closed: ignored
		if len(fl.calls) != 7 {
			t.Fatalf("%v: %d accept calls, want 7", errno, len(fl.calls))
		}
		// Waits of at least 5ms, 10ms, ... 160ms (a loaded machine may
		// make them longer, never shorter).
		for i, want := 0, acceptBackoffMin; i < len(fl.calls)-1; i, want = i+1, 2*want {
			if got := fl.calls[i+1].Sub(fl.calls[i]); got < want {
				t.Errorf("%v: wait %d was %v, want at least %v", errno, i, got, want)
			}
		}
	}
	if n := strings.Count(logs.String(), "cannot accept connections"); n != 3 {
		t.Errorf("%d warnings for 3 bursts of errors, want 3:\n%s", n, logs)
	}
	if n := strings.Count(logs.String(), "accepting connections again"); n != 3 {
		t.Errorf("%d recoveries logged, want 3", n)
	}

	fl := &flakyListener{Listener: inner, fails: 1, err: syscall.EBADF}
	if _, err := (&guardedListener{Listener: fl, lim: lim}).Accept(); !errors.Is(err, syscall.EBADF) {
		t.Errorf("EBADF: Accept = %v, want it returned", err)
	}
}

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// panicBody panics in every method.
type panicBody struct{}

func (panicBody) Read([]byte) (int, error)         { panic("read bug") }
func (panicBody) WriteTo(io.Writer) (int64, error) { panic("write bug") }
func (panicBody) Close() error                     { panic("close bug") }

// TestBodyPanicIsRecovered: a streamed body is read by fasthttp after the
// handler returned; a panic there ends that response with an error, is
// counted and logged, and does not reach fasthttp's goroutine.
func TestBodyPanicIsRecovered(t *testing.T) {
	g := startGuardServer(t, panicStore{})
	b := &guardedBody{r: panicBody{}, s: g.Server, ex: &exchange{method: "GET", path: "/v2/x/blobs/y"}}
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, errPanic) {
		t.Errorf("Read: %v, want errPanic", err)
	}
	if _, err := b.WriteTo(io.Discard); !errors.Is(err, errPanic) {
		t.Errorf("WriteTo: %v, want errPanic", err)
	}
	if err := b.Close(); !errors.Is(err, errPanic) {
		t.Errorf("Close: %v, want errPanic", err)
	}
	if n := counterValue(t, g.guard.panics); n != 3 {
		t.Errorf("regmirror_panics_total = %v, want 3", n)
	}
	if logs := g.log.String(); !strings.Contains(logs, "write bug") || !strings.Contains(logs, "guard_test.go") {
		t.Errorf("the panic was not logged with its stack:\n%s", logs)
	}
	// A body without WriteTo is copied by Read.
	var out bytes.Buffer
	if n, err := (&guardedBody{r: strings.NewReader("abc"), s: g.Server, ex: &exchange{}}).WriteTo(&out); n != 3 || err != nil || out.String() != "abc" {
		t.Errorf("WriteTo of a plain reader: %d %v %q", n, err, out.String())
	}
}

// TestPanicInATagRevalidation: a bug that panics inside a tag revalidation
// (here: the registry's methods are missing) is that revalidation's error
// for every caller. Before, singleflight raised the panic again in a
// goroutine of its own for a DoChan caller (the watch list's
// RevalidateTag), which no recover reaches: the process ended.
func TestPanicInATagRevalidation(t *testing.T) {
	g := startGuardServer(t, tempStore(t))
	if _, err := g.RevalidateTag(t.Context(), "docker.io", "library/x", "latest"); !errors.Is(err, errPanic) {
		t.Fatalf("RevalidateTag: %v, want the panic as an error", err)
	}
	resp, err := http.Get("http://" + g.addr + "/v2/library/x/manifests/latest")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("a client of the tag: status %d, want 500", resp.StatusCode)
	}
	if n := counterValue(t, g.guard.panics); n != 2 {
		t.Errorf("regmirror_panics_total = %v, want 2", n)
	}
}
