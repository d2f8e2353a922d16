package proxy

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/imageref"
)

// The request log: one line per request, written when the answer is
// complete (for a streamed body, when fasthttp closes the stream).
//
// Durations in regmirror's logs are float seconds in an attribute whose
// name ends in _s ("duration_s=0.000412"), the same in text and JSON, so
// that a log pipeline reads every one the same way (issue 9, item 9).
//
// The line is formatted on the request's goroutine and handed to the
// Logger's writer in one Write; serve's writer gathers lines in memory and
// writes them in batches from its own goroutine (internal/logbuf), flushed
// at shutdown, so a request waits on no log write. serve's logger
// (internal/logline) formats the line straight into a pooled buffer, in
// the same bytes its slog handler would write; any other logger gets a
// slog record.

// maxLoggedText bounds what a client chose (user agent, a registry name it
// asked for) that goes into a log line.
const maxLoggedText = 256

// exchanges recycles exchanges: one per request, and a request that is
// answered from memory allocates little else.
var exchanges = sync.Pool{New: func() any { return new(exchange) }}

func newExchange(s *Server, ctx *fasthttp.RequestCtx) *exchange {
	start := ctx.Time() // taken by fasthttp just before the handler
	if start.IsZero() {
		start = time.Now()
	}
	e := exchanges.Get().(*exchange)
	e.s, e.start = s, start
	e.method, e.path = methodString(ctx), requestPaths.get(ctx.Path())
	e.client, e.userAgent = clientIP(ctx), userAgent(ctx)
	return e
}

// release returns e to the pool once its line is written, unless a body
// stream still holds it (the stream's end writes the line, later).
func (e *exchange) release(r reply) {
	if r.stream != nil || !e.logged.Load() {
		return
	}
	*e = exchange{}
	exchanges.Put(e)
}

// logRequest writes the request line of e, ending at now.
func (s *Server) logRequest(e *exchange, now time.Time, bytes int64, err error) {
	level := slog.LevelInfo
	if e.endpoint == "metrics" || e.endpoint == "health" {
		level = slog.LevelDebug // scrapes and probes would drown the pulls
	}
	ctx := context.Background()
	h := s.log.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	if s.lines != nil { // serve's logger: formatted straight into its output
		l := s.lines.Begin(now, level, "request")
		e.appendFields(l, now, bytes, err)
		l.End()
		return
	}
	var buf [16]slog.Attr
	attrs := attrSink(buf[:0])
	e.appendFields(&attrs, now, bytes, err)
	// The record goes to the handler directly, without a caller's program
	// counter (no handler here adds the source; Logger.LogAttrs would walk
	// the stack for it on every request).
	r := slog.NewRecord(now, level, "request", 0)
	r.AddAttrs(attrs...)
	_ = h.Handle(ctx, r)
}

// fieldSink takes a request line's attributes: logline's fast path, or
// slog attributes for any other logger.
type fieldSink interface {
	String(k, v string)
	Int(k string, v int64)
	Float(k string, v float64)
}

// appendFields is the request line's one list of attributes.
func (e *exchange) appendFields(l fieldSink, now time.Time, bytes int64, err error) {
	l.String("method", e.method)
	l.String("path", e.path)
	l.Int("status", int64(e.status))
	l.Int("bytes", bytes)
	l.Float("duration_s", now.Sub(e.start).Seconds())
	l.String("client", e.client)
	if e.userAgent != "" {
		l.String("user_agent", e.userAgent)
	}
	if e.registry != "" {
		l.String("registry", e.registry)
	} else if e.asked != "" {
		l.String("registry_asked", e.asked)
	}
	if e.user != "" {
		l.String("user", e.user)
	}
	if e.outcome != OutcomeNone {
		l.String("cache", string(e.outcome))
	}
	if e.errorCode != "" {
		l.String("error", e.errorCode)
		l.String("detail", e.detail)
	}
	if err != nil {
		l.String("err", err.Error())
	}
}

// attrSink collects the fields as slog attributes.
type attrSink []slog.Attr

func (a *attrSink) String(k, v string)        { *a = append(*a, slog.String(k, v)) }
func (a *attrSink) Int(k string, v int64)     { *a = append(*a, slog.Int64(k, v)) }
func (a *attrSink) Float(k string, v float64) { *a = append(*a, slog.Float64(k, v)) }

// askedRegistry is the registry a request named (containerd's ?ns=, or a
// registry host as the first path component) when none of the configured
// ones answered it: the refusal's log line says what was asked for.
func askedRegistry(ctx *fasthttp.RequestCtx, path string) string {
	if ns := ctx.QueryArgs().Peek("ns"); len(ns) > 0 {
		return clip(ns)
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return ""
	}
	if first, _, ok := strings.Cut(rest, "/"); ok && imageref.IsHost(first) {
		return clip([]byte(first))
	}
	return ""
}

// userAgent is the client's User-Agent, clipped, interned.
func userAgent(ctx *fasthttp.RequestCtx) string {
	ua := ctx.UserAgent()
	if len(ua) > maxLoggedText {
		ua = ua[:maxLoggedText]
	}
	return userAgents.get(ua)
}

// clip copies b, cut to maxLoggedText bytes.
func clip(b []byte) string {
	if len(b) > maxLoggedText {
		b = b[:maxLoggedText]
	}
	return string(b)
}
