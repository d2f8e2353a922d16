package proxy

import (
	"context"
	"log/slog"
	"strings"
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
// The line is formatted on the request's goroutine into the handler's
// buffer and handed to the Logger's writer in one Write; serve's writer
// gathers lines in memory and writes them in batches from its own
// goroutine (internal/logbuf), flushed at shutdown, so a request waits on
// no log write.

// maxLoggedText bounds what a client chose (user agent, a registry name it
// asked for) that goes into a log line.
const maxLoggedText = 256

func newExchange(s *Server, ctx *fasthttp.RequestCtx) *exchange {
	return &exchange{
		s:         s,
		start:     time.Now(),
		method:    methodString(ctx),
		path:      string(ctx.Path()),
		client:    clientIP(ctx),
		userAgent: userAgent(ctx),
	}
}

// logRequest writes the request line of e.
func (s *Server) logRequest(e *exchange, bytes int64, err error) {
	level := slog.LevelInfo
	if e.endpoint == "metrics" || e.endpoint == "health" {
		level = slog.LevelDebug // scrapes and probes would drown the pulls
	}
	ctx := context.Background()
	h := s.log.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	now := time.Now()
	var buf [16]slog.Attr
	attrs := append(buf[:0],
		slog.String("method", e.method),
		slog.String("path", e.path),
		slog.Int("status", e.status),
		slog.Int64("bytes", bytes),
		slog.Float64("duration_s", now.Sub(e.start).Seconds()),
		slog.String("client", e.client),
	)
	if e.userAgent != "" {
		attrs = append(attrs, slog.String("user_agent", e.userAgent))
	}
	if e.registry != "" {
		attrs = append(attrs, slog.String("registry", e.registry))
	} else if e.asked != "" {
		attrs = append(attrs, slog.String("registry_asked", e.asked))
	}
	if e.user != "" {
		attrs = append(attrs, slog.String("user", e.user))
	}
	if e.outcome != OutcomeNone {
		attrs = append(attrs, slog.String("cache", string(e.outcome)))
	}
	if e.errorCode != "" {
		attrs = append(attrs, slog.String("error", e.errorCode), slog.String("detail", e.detail))
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	// The record goes to the handler directly, without a caller's program
	// counter (no handler here adds the source; Logger.LogAttrs would walk
	// the stack for it on every request).
	r := slog.NewRecord(now, level, "request", 0)
	r.AddAttrs(attrs...)
	_ = h.Handle(ctx, r)
}

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
