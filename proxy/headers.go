package proxy

import (
	"strconv"
	"sync"

	"github.com/valyala/fasthttp"
)

// What the hit path writes on every answer, prepared once: header names in
// canonical form (fasthttp then skips normalising them), and the strings a
// request log line and the metrics take from a request, interned, so that
// a warm request allocates only its exchange, its path and its log record
// (BenchmarkSmallHits reports allocs/op).

var (
	hdrDockerContentDigest = []byte("Docker-Content-Digest")
	hdrETag                = []byte("ETag")
	hdrAcceptRanges        = []byte("Accept-Ranges")
	hdrCacheControl        = []byte("Cache-Control")
	hdrAPIVersion          = []byte("Docker-Distribution-API-Version")
	hdrCache               = []byte(CacheHeader)

	valBytes      = []byte("bytes")
	valMaxAge     = []byte("max-age=31536000")
	valRegistryV2 = []byte("registry/2.0")
)

// setHeader sets a header whose name is prepared, without allocating for
// a value of up to 128 bytes (a digest, an ETag).
func setHeader(ctx *fasthttp.RequestCtx, key []byte, value string) {
	var buf [128]byte
	ctx.Response.Header.SetCanonical(key, append(buf[:0], value...))
}

// setDigestHeaders sets Docker-Content-Digest and the ETag that quotes it.
func setDigestHeaders(ctx *fasthttp.RequestCtx, d string) {
	var buf [128]byte
	ctx.Response.Header.SetCanonical(hdrDockerContentDigest, append(buf[:0], d...))
	etag := append(buf[:0], '"')
	etag = append(etag, d...)
	ctx.Response.Header.SetCanonical(hdrETag, append(etag, '"'))
}

// methodString is the request method, without a copy for the usual ones.
func methodString(ctx *fasthttp.RequestCtx) string {
	switch {
	case ctx.IsGet():
		return fasthttp.MethodGet
	case ctx.IsHead():
		return fasthttp.MethodHead
	}
	return string(ctx.Method())
}

// interned keeps one copy of strings requests repeat (client addresses,
// user agents): looking one up costs no allocation. Bounded: when full it
// starts again empty.
type interned struct {
	mu sync.Mutex
	m  map[string]string
}

const maxInterned = 4096

func (t *interned) get(b []byte) string {
	return t.getOr(b, func() string { return string(b) })
}

// getOr is the interned string for b, made by mk the first time.
func (t *interned) getOr(b []byte, mk func() string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.m[string(b)]; ok {
		return s
	}
	if t.m == nil || len(t.m) >= maxInterned {
		t.m = make(map[string]string)
	}
	s := mk()
	t.m[string(b)] = s
	return s
}

var (
	userAgents  interned
	clientAddrs interned // keyed by the address's bytes
)

// clientIP is the client's IP address as text.
func clientIP(ctx *fasthttp.RequestCtx) string {
	ip := ctx.RemoteIP()
	return clientAddrs.getOr(ip, ip.String)
}

// statusCodes are the metric labels of the usual status codes.
var statusCodes = func() (codes [600]string) {
	for i := 100; i < len(codes); i++ {
		codes[i] = strconv.Itoa(i)
	}
	return codes
}()

// statusLabel is code as a metric label.
func statusLabel(code int) string {
	if code >= 100 && code < len(statusCodes) {
		return statusCodes[code]
	}
	return strconv.Itoa(code)
}
