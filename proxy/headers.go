package proxy

import (
	"hash/maphash"
	"net"
	"strconv"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// What the hit path writes on every answer, prepared once: header names in
// canonical form (fasthttp then skips normalising them), and the strings a
// request log line and the metrics take from a request, interned, so that
// a warm request allocates nothing (BenchmarkSmallHits reports allocs/op).

var (
	hdrDockerContentDigest = []byte("Docker-Content-Digest")
	hdrETag                = []byte("Etag") // as fasthttp (and net/http) normalise it, so that Del finds it
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

// interned keeps one copy of strings requests repeat (paths, client
// addresses, user agents), so that a repeat costs no allocation. It is a
// fixed table of slots picked by the bytes' hash, each holding the last
// string that hashed there: bounded in memory, lock-free (two cores do not
// contend for a mutex on every request), and a client that sends ever new
// values only makes lookups miss, which cost what no table would.
type interned struct {
	seed    maphash.Seed
	maxLen  int // longer values are not kept
	slots   []atomic.Pointer[internEntry]
	slotMax uint64 // len(slots)-1, a power of two less one
}

// internEntry is a value and the bytes it was made from (the same string
// but for client addresses, whose bytes are the IP's and value its text).
type internEntry struct{ key, value string }

// internSlots per table: a few thousand distinct hot values (the paths of
// the images in use, the clients of a site) fit without thrashing.
const internSlots = 4096

// newInterned makes a table of slots (a power of two) that keeps values
// up to maxLen bytes long.
func newInterned(slots, maxLen int) *interned {
	if slots <= 0 || slots&(slots-1) != 0 {
		panic("proxy: interned table size is not a power of two")
	}
	return &interned{seed: maphash.MakeSeed(), maxLen: maxLen, slots: make([]atomic.Pointer[internEntry], slots), slotMax: uint64(slots - 1)}
}

// get is the interned string of b.
func (t *interned) get(b []byte) string { return t.getOr(b, nil) }

// getOr is the interned string for b, made by mk (nil: b as a string)
// when b is not in the table.
func (t *interned) getOr(b []byte, mk func() string) string {
	if len(b) > t.maxLen {
		if mk == nil {
			return string(b)
		}
		return mk()
	}
	slot := t.slot(b)
	if v, ok := lookup(slot, b); ok {
		return v
	}
	e := &internEntry{key: string(b)}
	e.value = e.key
	if mk != nil {
		e.value = mk()
	}
	slot.Store(e)
	return e.value
}

func (t *interned) slot(b []byte) *atomic.Pointer[internEntry] {
	return &t.slots[maphash.Bytes(t.seed, b)&t.slotMax]
}

func lookup(slot *atomic.Pointer[internEntry], b []byte) (string, bool) {
	if e := slot.Load(); e != nil && e.key == string(b) {
		return e.value, true
	}
	return "", false
}

var (
	requestPaths = newInterned(internSlots, 512) // a repository name and a digest fit
	userAgents   = newInterned(internSlots, maxLoggedText)
	clientAddrs  = newInterned(internSlots, net.IPv6len) // keyed by the address's bytes
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
