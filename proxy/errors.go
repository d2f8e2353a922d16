package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/access"
	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/imageref"
	"github.com/regmirror/regmirror/upstream"
)

// Errors raised inside this package. They say what went wrong in our terms;
// toWire alone decides which registry code a client sees.
var (
	errNameInvalid        = errors.New("invalid repository name")
	errReferenceInvalid   = errors.New("invalid tag or digest")
	errDigestInvalid      = imageref.ErrInvalidDigest // the one digest rule
	errUnsupportedMethod  = errors.New("this mirror only serves pulls")
	errUnknownEndpoint    = errors.New("unknown endpoint")
	errRegistryNotAllowed = errors.New("registry is not configured on this mirror")
	errForbidden          = errors.New("forbidden")
	errOffline            = errors.New("the mirror is offline and does not have this content")
	errNotCached          = errors.New("not cached")
	errUpstreamCorrupt    = errors.New("upstream sent content that does not match its digest")
	errPanic              = errors.New("internal error (a bug): the request was abandoned")

	// Raised by the HTTP layer itself (fasthttp's ErrorHandler).
	errHeaderTooLarge    = errors.New("request header too large")
	errBodyTooLarge      = errors.New("request body too large")
	errRequestTimeout    = errors.New("request not received in time")
	errRequestMalformed  = errors.New("malformed HTTP request")
	errPaginationInvalid = errors.New("invalid pagination")
)

// resource says what a request asked for, so that "not found" becomes the
// code a client expects (MANIFEST_UNKNOWN for a manifest, and so on).
type resource int

const (
	resourceNone resource = iota
	resourceManifest
	resourceBlob
	resourceRepository
)

// wireError is one registry error as it goes on the wire:
// {"errors":[{"code","message","detail"}]}.
type wireError struct {
	Status     int
	Code       string
	Message    string
	Detail     string
	RetryAfter time.Duration
}

func notFoundCode(res resource) (string, string) {
	switch res {
	case resourceManifest:
		return "MANIFEST_UNKNOWN", "manifest unknown"
	case resourceBlob:
		return "BLOB_UNKNOWN", "blob unknown to registry"
	default:
		return "NAME_UNKNOWN", "repository name not known to registry"
	}
}

// toWire maps any error the proxy meets to the registry error a client gets.
func toWire(err error, res resource) wireError {
	w := wireError{Detail: clientDetail(err)}
	var rl *upstream.RateLimitError
	var al *access.RateLimitError
	switch {
	case errors.Is(err, access.ErrUnauthenticated):
		w.Status, w.Code, w.Message = http.StatusUnauthorized, "UNAUTHORIZED", "authentication required"
	case errors.Is(err, access.ErrDenied):
		w.Status, w.Code, w.Message = http.StatusForbidden, "DENIED", "requested access to the resource is denied"
	case errors.As(err, &al):
		w.Status, w.Code, w.Message = http.StatusTooManyRequests, "TOOMANYREQUESTS", "too many requests from this client, retry later"
		w.RetryAfter = al.RetryAfter
	case errors.Is(err, errNameInvalid), errors.Is(err, upstream.ErrInvalidName):
		w.Status, w.Code, w.Message = http.StatusBadRequest, "NAME_INVALID", "invalid repository name"
	case errors.Is(err, errDigestInvalid), errors.Is(err, cache.ErrInvalidDigest):
		w.Status, w.Code, w.Message = http.StatusBadRequest, "DIGEST_INVALID", "invalid digest"
	case errors.Is(err, errReferenceInvalid):
		w.Status, w.Code, w.Message = http.StatusBadRequest, "MANIFEST_INVALID", "invalid tag or digest in the reference"
	case errors.Is(err, errPaginationInvalid):
		w.Status, w.Code, w.Message = http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", "invalid number of results requested"
	case errors.Is(err, errUnsupportedMethod):
		w.Status, w.Code, w.Message = http.StatusMethodNotAllowed, "UNSUPPORTED", "the operation is unsupported: this is a read-only mirror"
	case errors.Is(err, errUnknownEndpoint):
		w.Status, w.Code, w.Message = http.StatusNotFound, "UNSUPPORTED", "unknown endpoint"
	case errors.Is(err, errRegistryNotAllowed), errors.Is(err, errForbidden):
		w.Status, w.Code, w.Message = http.StatusForbidden, "DENIED", "requested access to the resource is denied"
	case errors.Is(err, errOffline), errors.Is(err, errNotCached), errors.Is(err, upstream.ErrNotFound), errors.Is(err, cache.ErrNotFound):
		w.Status = http.StatusNotFound
		w.Code, w.Message = notFoundCode(res)
	case errors.As(err, &rl):
		w.Status, w.Code, w.Message = http.StatusTooManyRequests, "TOOMANYREQUESTS", "upstream rate limit reached, retry later"
		w.RetryAfter = rl.RetryAfter
	case errors.Is(err, upstream.ErrRateLimited):
		w.Status, w.Code, w.Message = http.StatusTooManyRequests, "TOOMANYREQUESTS", "upstream rate limit reached, retry later"
	case errors.Is(err, upstream.ErrUnauthorized):
		w.Status, w.Code, w.Message = http.StatusUnauthorized, "UNAUTHORIZED", "upstream refused the mirror's credentials, or the repository does not exist"
	case errors.Is(err, upstream.ErrDenied):
		w.Status, w.Code, w.Message = http.StatusForbidden, "DENIED", "upstream denied access to the resource"
	case errors.Is(err, upstream.ErrInvalidManifest):
		w.Status, w.Code, w.Message = http.StatusBadGateway, "MANIFEST_INVALID", "upstream sent something that is not a valid manifest; it was not cached"
	case errors.Is(err, upstream.ErrRefused):
		w.Status, w.Code, w.Message = http.StatusBadGateway, "UNAVAILABLE", "upstream pointed the mirror somewhere it may not go"
	case errors.Is(err, upstream.ErrBadRequest):
		w.Status, w.Code, w.Message = http.StatusBadGateway, "UNSUPPORTED", "upstream refused the request"
	case errors.Is(err, upstream.ErrTooLarge):
		w.Status, w.Code, w.Message = http.StatusBadGateway, "MANIFEST_INVALID", "upstream manifest is larger than this mirror accepts"
	case errors.Is(err, errUpstreamCorrupt), errors.Is(err, cache.ErrDigestMismatch), errors.Is(err, cache.ErrSizeMismatch):
		w.Status, w.Code, w.Message = http.StatusBadGateway, "UNAVAILABLE", "upstream sent corrupt content; it was not cached, retry"
	case errors.Is(err, errRangeNotSatisfiable), errors.Is(err, errRangeInvalid):
		w.Status, w.Code, w.Message = http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID", "requested range not satisfiable"
	case errors.Is(err, errHeaderTooLarge):
		w.Status, w.Code, w.Message = http.StatusRequestHeaderFieldsTooLarge, "UNSUPPORTED", "request header too large"
	case errors.Is(err, errBodyTooLarge):
		w.Status, w.Code, w.Message = http.StatusRequestEntityTooLarge, "UNSUPPORTED", "request body too large: this is a read-only mirror"
	case errors.Is(err, errRequestTimeout):
		w.Status, w.Code, w.Message = http.StatusRequestTimeout, "UNSUPPORTED", "request not received in time"
	case errors.Is(err, errRequestMalformed):
		w.Status, w.Code, w.Message = http.StatusBadRequest, "UNSUPPORTED", "malformed HTTP request"
	case errors.Is(err, errTooManyConnectionsPerIP):
		w.Status, w.Code, w.Message = http.StatusTooManyRequests, "TOOMANYREQUESTS", "too many connections from this address, retry later"
		w.RetryAfter = time.Second
	case errors.Is(err, errTooManyConnections):
		w.Status, w.Code, w.Message = http.StatusServiceUnavailable, "UNAVAILABLE", "the mirror has too many connections, retry later"
	case errors.Is(err, errTooManyFillsPerClient):
		w.Status, w.Code, w.Message = http.StatusTooManyRequests, "TOOMANYREQUESTS", "too many downloads this address started and left are still running, retry later"
		w.RetryAfter = capRetryAfter
	case errors.Is(err, errTooManyFills), errors.Is(err, errPassThroughMemory):
		w.Status, w.Code, w.Message = http.StatusServiceUnavailable, "UNAVAILABLE", "the mirror is busy with too many downloads, retry later"
		w.RetryAfter = capRetryAfter
	case errors.Is(err, errStopping):
		w.Status, w.Code, w.Message, w.RetryAfter = http.StatusServiceUnavailable, "UNAVAILABLE", "the mirror is shutting down, retry shortly", 5*time.Second
	case errors.Is(err, errStarting):
		w.Status, w.Code, w.Message, w.RetryAfter = http.StatusServiceUnavailable, "UNAVAILABLE", "the mirror is starting, retry shortly", 5*time.Second
	case errors.Is(err, errPanic):
		w.Status, w.Code, w.Message = http.StatusInternalServerError, "UNKNOWN", "internal error"
	case isTimeout(err):
		// Before ErrUnavailable: a timeout is often wrapped in it too.
		w.Status, w.Code, w.Message = http.StatusGatewayTimeout, "UNAVAILABLE", "upstream did not answer in time and the content is not cached"
	case errors.Is(err, upstream.ErrUnavailable), errors.Is(err, context.Canceled):
		w.Status, w.Code, w.Message = http.StatusServiceUnavailable, "UNAVAILABLE", "upstream is unavailable and the content is not cached"
	default:
		w.Status, w.Code, w.Message = http.StatusInternalServerError, "UNKNOWN", "internal error"
	}
	return w
}

// clientDetail is the detail a client sees: for errors from upstream only
// upstream.ClientReason's short text, never upstream bodies, URLs or
// addresses (the whole error goes to the request log, under "detail").
func clientDetail(err error) string {
	if r, ok := upstream.ClientReason(err); ok {
		return r
	}
	return err.Error()
}

// isTimeout reports whether err is a deadline that passed: a context's (a
// fill or upstream request timeout) or a network one (dial, TLS, response
// header, body read).
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

type wireBody struct {
	Errors []wireEntry `json:"errors"`
}

type wireEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  string `json:"detail,omitempty"`
}

// challenge marks an error answered with a Basic challenge: access
// control's "log in" (peers, which sign requests instead, get none).
type challenge struct{ err error }

func (c *challenge) Error() string { return c.err.Error() }
func (c *challenge) Unwrap() error { return c.err }

// withChallenge asks the client to log in when err says it must.
func withChallenge(err error) error {
	if errors.Is(err, access.ErrUnauthenticated) {
		return &challenge{err}
	}
	return err
}

// writeError is the one place that puts a registry error on the wire (a
// handler's, through finish; the HTTP layer's; a recovered panic's). Beside
// the JSON body it sets the headers some errors call for: Retry-After, a
// Basic challenge for a client that must log in, and Content-Range for an
// unsatisfiable range. It drops the headers a handler had set for the body
// the error replaces (a year's Cache-Control, the digest and ETag): a cache
// in front of the mirror would keep a 416 or a 500 as that blob.
func writeError(ctx *fasthttp.RequestCtx, err error, res resource) wireError {
	w := toWire(err, res)
	ctx.Response.ResetBody()
	for _, h := range [][]byte{hdrCacheControl, hdrETag, hdrDockerContentDigest} {
		ctx.Response.Header.DelBytes(h)
	}
	ctx.SetStatusCode(w.Status)
	ctx.SetContentType("application/json")
	if w.RetryAfter > 0 {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(int((w.RetryAfter+time.Second-1)/time.Second)))
	} else if w.Status == http.StatusTooManyRequests {
		ctx.Response.Header.Set("Retry-After", "60")
	}
	var c *challenge
	if errors.As(err, &c) {
		// A browser (the status page) or client then asks for the login.
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Basic realm="regmirror"`)
	}
	var re *rangeError
	if errors.As(err, &re) {
		ctx.Response.Header.Set("Content-Range", "bytes */"+strconv.FormatInt(re.size, 10))
	}
	body, _ := json.Marshal(wireBody{Errors: []wireEntry{{Code: w.Code, Message: w.Message, Detail: w.Detail}}})
	if ctx.IsHead() {
		ctx.Response.Header.SetContentLength(len(body))
		return w
	}
	ctx.SetBody(body)
	return w
}
