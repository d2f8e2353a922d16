package proxy

import (
	"io"

	"github.com/valyala/fasthttp"
)

// Handlers answer with a reply or an error and never write the response
// themselves (as go-containerregistry's pkg/registry handlers return a
// *regError): finish is the one step that puts either on the wire, errors
// through writeError (toWire), records the status for the request log, and
// hands a streamed body to fasthttp. A handler may set response headers
// (Docker-Content-Digest, Content-Range, …) before it returns; the status,
// the content type and the body are the reply's.

// handlerFunc answers one request that is not a registry pull (the
// operator views, /metrics, /healthz, management).
type handlerFunc func(ctx *fasthttp.RequestCtx, ex *exchange) (reply, error)

// reply is a successful answer.
type reply struct {
	// status is the HTTP status; 0 means 200.
	status int
	// contentType, when set, is the Content-Type.
	contentType string
	// body is a small answer held in memory; a HEAD gets its length only.
	body []byte
	// stream, when set, is a body fasthttp reads after the handler returned
	// (a cached file, a fill's follower, a pass-through); its Close ends
	// the exchange's log line. length is its length, -1 when unknown
	// (chunked), or, with headOnly, the length a HEAD announces.
	stream   io.Reader
	length   int
	headOnly bool
	// flush sends the status line and headers at once, not when the first
	// bytes of a slow body have filled fasthttp's write buffer.
	flush bool
	// delegated: another handler (the metrics or management handler) has
	// written the whole response.
	delegated bool
}

// bodyReply answers with body, held in memory.
func bodyReply(contentType string, body []byte) reply {
	return reply{contentType: contentType, body: body}
}

// headReply answers a HEAD with a Content-Length of length and no body.
func headReply(status, length int) reply {
	return reply{status: status, length: length, headOnly: true}
}

// streamReply answers with a streamed body of length bytes (-1: unknown).
func streamReply(status int, stream io.Reader, length int, flush bool) reply {
	return reply{status: status, stream: stream, length: length, flush: flush}
}

// delegated is the reply of a handler that let another write the response.
var delegated = reply{delegated: true}

// finish puts a handler's answer on the wire and, unless its body is a
// stream (whose Close does it), logs and counts the exchange.
func (s *Server) finish(ctx *fasthttp.RequestCtx, ex *exchange, r reply, err error) {
	if ex.outcome != OutcomeNone {
		// Tells operators (and preload's summary) where an answer came from.
		setHeader(ctx, hdrCache, string(ex.outcome))
	}
	switch {
	case err != nil:
		w := writeError(ctx, err, ex.resource)
		markUpstreamFailure(ctx, ex, err)
		ex.errorCode, ex.detail = w.Code, err.Error()
		if ex.registry == "" {
			ex.asked = askedRegistry(ctx, ex.path)
		}
	case r.delegated:
	case r.stream != nil:
		writeHead(ctx, r)
		ex.status = ctx.Response.StatusCode()
		ctx.Response.ImmediateHeaderFlush = r.flush
		s.setBodyStream(ctx, ex, r.stream, r.length)
		return
	default:
		writeReply(ctx, r)
	}
	ex.status = ctx.Response.StatusCode()
	ex.done(int64(len(ctx.Response.Body())), nil)
}

// writeHead sets a reply's status and content type.
func writeHead(ctx *fasthttp.RequestCtx, r reply) {
	if r.status != 0 {
		ctx.SetStatusCode(r.status)
	}
	if r.contentType != "" {
		ctx.SetContentType(r.contentType)
	}
}

// writeReply writes a reply whose body is in memory (or absent).
func writeReply(ctx *fasthttp.RequestCtx, r reply) {
	writeHead(ctx, r)
	switch {
	case r.headOnly:
		ctx.Response.Header.SetContentLength(r.length)
	case ctx.IsHead():
		ctx.Response.Header.SetContentLength(len(r.body))
	default:
		ctx.SetBody(r.body)
	}
}
