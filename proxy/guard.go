package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Guards against hostile or broken input at the HTTP edge: a handler panic
// is answered 500 and counted, never the end of the process (recoverPanic),
// and the errors fasthttp raises itself before a handler runs (a header
// larger than the read buffer, an unparsable request, a body over the cap,
// a request that does not arrive in time) are registry JSON too
// (httpLayerError). The listener's guards are in listener.go.

// maxHeaderSize is the largest request header accepted (fasthttp's read
// buffer, which a whole header must fit in). Registry tokens are JWTs of a
// few KiB (cloud providers' up to ~8 KiB); 32 KiB leaves room for those
// with a margin, while an idle keep-alive connection still costs little.
const maxHeaderSize = 32 << 10

// guardMetrics count what the guards caught.
type guardMetrics struct {
	panics        prometheus.Counter
	httpErrors    *prometheus.CounterVec
	acceptErrors  prometheus.Counter
	refusedConns  *prometheus.CounterVec
	openConns     prometheus.Gauge
	acceptBackoff prometheus.Gauge
}

func newGuardMetrics(reg *prometheus.Registry) *guardMetrics {
	m := &guardMetrics{
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regmirror_panics_total", Help: "Request handler panics recovered (each is a bug; the request was answered 500).",
		}),
		httpErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regmirror_http_errors_total", Help: "Requests refused by the HTTP layer before routing, by reason.",
		}, []string{"reason"}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regmirror_accept_errors_total", Help: "Temporary errors accepting connections (out of descriptors, aborted), each retried after a backoff.",
		}),
		refusedConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regmirror_connections_refused_total", Help: "Client connections refused at accept, by the cap they exceeded.",
		}, []string{"limit"}),
		openConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "regmirror_connections_open", Help: "Client connections open now.",
		}),
		acceptBackoff: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "regmirror_accept_backoff_seconds", Help: "Current backoff before accepting again after a temporary accept error (0: accepting).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.panics, m.httpErrors, m.acceptErrors, m.refusedConns, m.openConns, m.acceptBackoff)
	}
	return m
}

// recoverPanic, deferred by handle, turns a panic into a logged (with its
// stack), counted 500 in registry JSON. Whatever the handler had set up,
// a body stream included, is dropped first (fasthttp closes the stream,
// which releases its descriptor).
func (s *Server) recoverPanic(ctx *fasthttp.RequestCtx, ex *exchange) {
	v := recover()
	if v == nil {
		return
	}
	s.guard.panics.Inc()
	s.log.Error("panic while handling a request (a bug; answered 500)",
		"method", ex.method, "path", ex.path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	ex.status = fasthttp.StatusInternalServerError
	ex.errorCode = "UNKNOWN"
	ex.done(0, fmt.Errorf("panic: %v", v)) // before Reset: a stream's Close would log it as it was
	ctx.Response.Reset()                   // closes a body stream, releasing its descriptor
	ctx.SetConnectionClose()
	writeError(ctx, errPanic, resourceNone)
}

// httpLayerError is fasthttp's ErrorHandler: errors met while reading a
// request, before any handler runs, answered in registry JSON with the
// status fasthttp would have used. fasthttp closes the connection after.
func (s *Server) httpLayerError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	var wrapped error
	reason := "malformed"
	switch {
	case errors.As(err, &small):
		wrapped, reason = fmt.Errorf("%w: the limit is %d bytes", errHeaderTooLarge, maxHeaderSize), "header_too_large"
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		wrapped, reason = errBodyTooLarge, "body_too_large"
	case errors.As(err, &ne) && ne.Timeout():
		wrapped, reason = errRequestTimeout, "timeout"
	default:
		wrapped = errRequestMalformed
	}
	s.guard.httpErrors.WithLabelValues(reason).Inc()
	s.log.Debug("refused at the HTTP layer", "remote", ctx.RemoteAddr().String(), "reason", reason, "err", err)
	writeError(ctx, wrapped, resourceNone)
}

// setBodyStream hands fasthttp a streamed body guarded like the handler:
// fasthttp reads it after the handler has returned, outside recoverPanic,
// so a panic in Read, WriteTo or Close is recovered here, logged, counted,
// and ends that response only (the connection is cut). WriteTo is passed
// through, which keeps fasthttp's sendfile path for cached files.
func (s *Server) setBodyStream(ctx *fasthttp.RequestCtx, ex *exchange, body io.Reader, size int) {
	ctx.Response.SetBodyStream(&guardedBody{r: body, s: s, ex: ex}, size)
}

type guardedBody struct {
	r  io.Reader
	s  *Server
	ex *exchange
}

func (b *guardedBody) recovered(err *error) {
	if v := recover(); v != nil {
		b.s.guard.panics.Inc()
		b.s.log.Error("panic while sending a response body (a bug; the response was cut)",
			"method", b.ex.method, "path", b.ex.path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		*err = fmt.Errorf("%w: %v", errPanic, v)
	}
}

func (b *guardedBody) Read(p []byte) (n int, err error) {
	defer b.recovered(&err)
	return b.r.Read(p)
}

func (b *guardedBody) WriteTo(w io.Writer) (n int64, err error) {
	defer b.recovered(&err)
	if wt, ok := b.r.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, struct{ io.Reader }{b.r})
}

func (b *guardedBody) Close() (err error) {
	defer b.recovered(&err)
	if c, ok := b.r.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
