package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/cache"
)

const blobContentType = "application/octet-stream"

// serveBlob answers GET and HEAD of /v2/<name>/blobs/<digest>: from the
// cache; else, for a HEAD, from upstream's HEAD; else from the shared
// download of the digest (a fill, or a pass-through when the cache cannot
// take it).
func (s *Server) serveBlob(ctx *fasthttp.RequestCtx, ex *exchange, rq request) (reply, error) {
	d := rq.ref.digest
	var retried error
	for attempt := 0; attempt < 2; attempt++ {
		if r, ok, err := s.cachedBlob(ctx, ex, rq); ok || err != nil {
			return r, err
		}
		if s.opts.Offline {
			return reply{}, fmt.Errorf("%w: %s", errOffline, d)
		}
		if ctx.IsHead() {
			ex.outcome = OutcomeMiss
			return s.headBlobUpstream(ctx, rq)
		}
		if r, ok := s.redirectBlob(ctx, ex, rq); ok {
			return r, nil
		}
		r, ok, err := s.blobDownload(ctx, ex, rq)
		if ok {
			return r, err
		}
		// The blob reached the cache meanwhile (serve it from there), or
		// left it as this client came, or the fill this client joined
		// failed for a reason of its own repository: a new fill. Its
		// error stands if there is no other try.
		retried = err
	}
	if retried != nil {
		return reply{}, retried
	}
	return reply{}, fmt.Errorf("%w: %s vanished from the cache", errNotCached, d)
}

// cachedBlob answers from the cache; ok is false when the blob is not
// cached.
func (s *Server) cachedBlob(ctx *fasthttp.RequestCtx, ex *exchange, rq request) (r reply, ok bool, err error) {
	d := rq.ref.digest
	if r, ok, err := s.serveHotHead(ctx, ex, rq); ok {
		return r, true, err
	}
	file, info, err := s.blobs.Open(d)
	if errors.Is(err, cache.ErrNotFound) {
		return reply{}, false, nil
	}
	if err != nil {
		return reply{}, true, err
	}
	if err := s.confirmInRepo(rq, d, resourceBlob); err != nil {
		file.Close()
		return reply{}, true, err
	}
	ex.outcome = OutcomeHit
	r, err = s.serveFile(ctx, ex, file, info)
	return r, true, err
}

// blobDownload answers a GET of a blob that is not cached from the one
// upstream download of its digest: a pass-through already running, else a
// fill (started or joined), else a pass-through when the disk is full. ok
// is false when the fill found the blob cached after all, when the blob of
// the fill this client joined was evicted before it could open it, or when
// that fill, started for another repository or registry, failed for a
// reason of its source's (err says which): serveBlob then asks again.
func (s *Server) blobDownload(ctx *fasthttp.RequestCtx, ex *exchange, rq request) (r reply, ok bool, err error) {
	if p := s.passes.joinable(rq.ref.digest); p != nil {
		r, err := s.servePassThrough(ctx, ex, rq, p.reason)
		return r, true, err
	}
	if s.diskFull() {
		r, err := s.servePassThrough(ctx, ex, rq, reasonDiskFull)
		return r, true, err
	}
	f, joined, err := s.joinFill(rq, s.fillStarterOf(ctx, ex))
	switch {
	case isNoSpace(err):
		r, err := s.servePassThrough(ctx, ex, rq, reasonDiskFull)
		return r, true, err
	case err != nil:
		return reply{}, true, err
	case f == nil:
		return reply{}, false, nil
	}
	ex.outcome = OutcomeMiss.Joined(joined)
	if !f.request.sameRepo(rq) {
		// A fill started for another repository: for a private
		// registry, upstream must show the blob in this one too.
		if err := s.confirmInRepo(rq, rq.ref.digest, resourceBlob); err != nil {
			return reply{}, true, err
		}
	}
	r, err = s.serveFill(ctx, ex, rq, f)
	switch {
	case errors.Is(err, errFillEvicted):
		return reply{}, false, nil // serveBlob asks again: a new fill
	case err != nil && !f.request.sameRepo(rq) && !isLocalFailure(err):
		return reply{}, false, err // the starting repository's trouble: a new fill
	}
	return r, true, err
}

// isLocalFailure reports whether a fill's error is this mirror's own (its
// disk) rather than what the fill's source said or did. Only the latter
// may not hold for a client of another repository or registry, whose own
// fill asks its own upstream: upstream's 404 for repository X, or a size
// X's manifest gave, says nothing about the same digest in Y.
func isLocalFailure(err error) bool {
	var werr *cacheWriteError
	return errors.As(err, &werr) || isNoSpace(err)
}

// headBlobUpstream answers a HEAD for a blob that is not cached without
// downloading it: from a fill in progress, else from upstream's HEAD.
func (s *Server) headBlobUpstream(ctx *fasthttp.RequestCtx, rq request) (reply, error) {
	size, err := s.uncachedBlobSize(rq)
	if err != nil {
		return reply{}, err
	}
	setBlobHeaders(ctx, rq.ref.digest.String())
	rng, status, err := applyRange(ctx, size)
	if err != nil {
		return reply{}, err
	}
	if size < 0 {
		rng.end = -1 // unknown length: no Content-Length to promise
	}
	return headReply(status, int(rng.end-rng.start)), nil
}

// uncachedBlobSize is the size of a blob that is not cached: a fill's in
// progress (without private registries, whose upstream must be asked per
// repository), else upstream's HEAD, checked against what manifests served
// said; -1 when nobody says.
func (s *Server) uncachedBlobSize(rq request) (int64, error) {
	d := rq.ref.digest
	if f := s.fills.get(d); f != nil && len(s.opts.PrivateRegistries) == 0 {
		if n, err := f.startResult(); err == nil {
			return n, nil
		}
	}
	uctx, cancel := context.WithTimeout(s.fillCtx, s.opts.UpstreamTimeout)
	defer cancel()
	n, err := rq.up.HeadBlob(uctx, rq.repo, d)
	if err == nil {
		err = s.checkAnnouncedSize(rq, d, n) // a lying length is a 502 here too
	}
	if err != nil {
		return 0, err
	}
	return s.expectedSize(rq, d, n), nil
}

func setBlobHeaders(ctx *fasthttp.RequestCtx, d string) {
	ctx.SetContentType(blobContentType)
	setDigestHeaders(ctx, d)
	ctx.Response.Header.SetCanonical(hdrAcceptRanges, valBytes)
	ctx.Response.Header.SetCanonical(hdrCacheControl, valMaxAge)
}

// byteRange is one satisfiable range of a body: [start, end).
type byteRange struct{ start, end int64 }

// Range errors, both answered 416 with Content-Range: bytes */<size>.
var (
	errRangeNotSatisfiable = errors.New("range not satisfiable")
	errRangeInvalid        = errors.New("malformed byte range")
)

// rangeError is a Range header refused for a body of size bytes; the error
// writer answers it with Content-Range: bytes */<size>.
type rangeError struct {
	err    error // errRangeNotSatisfiable or errRangeInvalid
	header string
	size   int64
}

func (e *rangeError) Error() string {
	return fmt.Sprintf("%v: %q for %d bytes", e.err, e.header, e.size)
}

func (e *rangeError) Unwrap() error { return e.err }

// maxRanges bounds how many ranges of one header are looked at; a longer
// list is malformed (no registry client sends more than one).
const maxRanges = 100

// parseRange reads a Range header against a body of size >= 0 bytes, by
// RFC 9110 §14 and net/http's ServeContent (which distribution serves blobs
// with), and never overflows: positions are compared with size before any
// arithmetic. It returns
//   - nil, nil for no header and for a unit other than bytes (a server must
//     ignore units it does not know): the whole body, 200;
//   - errRangeInvalid for a malformed bytes header ("bytes=5-1",
//     "bytes=a-", a number past int64), as net/http does: 416;
//   - errRangeNotSatisfiable when no range overlaps the body (a first
//     position at or past the end, a zero suffix, any range of an empty
//     body): 416;
//   - the one satisfiable range, when exactly one is (unsatisfiable ones
//     beside it are dropped, as net/http does): 206;
//   - nil, nil when several are: regmirror does not send
//     multipart/byteranges, and RFC 9110 lets a server answer the whole
//     body instead (net/http does the same when the ranges add up to more
//     than the body).
func parseRange(header string, size int64) (*byteRange, error) {
	header = strings.TrimSpace(header)
	if header == "" {
		return nil, nil
	}
	unit, spec, ok := strings.Cut(header, "=")
	if !ok {
		return nil, errRangeInvalid
	}
	if !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return nil, nil
	}
	var found []byteRange
	specs := strings.Split(spec, ",")
	if len(specs) > maxRanges {
		return nil, errRangeInvalid
	}
	empty := true
	for _, one := range specs {
		one = strings.TrimSpace(one)
		if one == "" {
			continue // RFC 9110 allows empty list elements
		}
		empty = false
		r, ok, err := parseOneRange(one, size)
		if err != nil {
			return nil, err
		}
		if ok {
			found = append(found, r)
		}
	}
	switch {
	case empty:
		return nil, errRangeInvalid
	case len(found) == 0:
		return nil, errRangeNotSatisfiable
	case len(found) > 1:
		return nil, nil
	}
	return &found[0], nil
}

// parseOneRange reads one range-spec ("a-b", "a-" or "-n"); ok is false
// when it is well formed but does not overlap a body of size bytes.
func parseOneRange(spec string, size int64) (r byteRange, ok bool, err error) {
	first, last, found := strings.Cut(spec, "-")
	if !found {
		return r, false, errRangeInvalid
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" { // suffix: the last n bytes
		n, err := parsePos(last)
		if err != nil {
			return r, false, err
		}
		if n == 0 || size == 0 {
			return r, false, nil
		}
		return byteRange{start: size - min(n, size), end: size}, true, nil
	}
	start, err := parsePos(first)
	if err != nil {
		return r, false, err
	}
	end := size // exclusive
	if last != "" {
		e, err := parsePos(last)
		if err != nil {
			return r, false, err
		}
		if e < start {
			return r, false, errRangeInvalid
		}
		if e < size { // e+1 cannot overflow: e < size <= MaxInt64
			end = e + 1
		}
	}
	if start >= size {
		return r, false, nil
	}
	return byteRange{start: start, end: end}, true, nil
}

// parsePos reads a non-negative decimal position: digits only (no sign, no
// spaces inside), at most int64.
func parsePos(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errRangeInvalid
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errRangeInvalid
	}
	return n, nil
}

// applyRange picks the part of a body of size bytes the request's Range
// asks for, and the status to answer with: 200 for the whole body, 206
// (with Content-Range set) for a part. An unsatisfiable or malformed range
// is a *rangeError (416). A body of unknown size (size < 0) is always sent
// whole.
func applyRange(ctx *fasthttp.RequestCtx, size int64) (byteRange, int, error) {
	full := byteRange{0, max(size, 0)}
	header := ctx.Request.Header.Peek("Range")
	if len(header) == 0 || size < 0 {
		return full, http.StatusOK, nil
	}
	rng, err := parseRange(string(header), size)
	if err != nil {
		return byteRange{}, 0, &rangeError{err: err, header: string(header), size: size}
	}
	if rng == nil {
		return full, http.StatusOK, nil
	}
	ctx.Response.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rng.start, rng.end-1, size))
	return *rng, http.StatusPartialContent, nil
}

// serveFile streams a cached blob. A whole file goes out by sendfile; so
// does a range, as a LimitedReader over the file (fasthttp keeps both on
// its zero-copy path). The reply owns file: its Close closes it.
func (s *Server) serveFile(ctx *fasthttp.RequestCtx, ex *exchange, file *os.File, info cache.BlobInfo) (reply, error) {
	setBlobHeaders(ctx, info.Digest.String())
	rng, status, err := applyRange(ctx, info.Size)
	if err != nil {
		file.Close()
		return reply{}, err
	}
	if ctx.IsHead() {
		file.Close()
		return headReply(status, int(rng.end-rng.start)), nil
	}
	body := &fileBody{file: file, ex: ex}
	if rng.start > 0 || rng.end < info.Size {
		if _, err := file.Seek(rng.start, io.SeekStart); err != nil {
			file.Close()
			return reply{}, err
		}
		body.limit = &io.LimitedReader{R: file, N: rng.end - rng.start}
	}
	return streamReply(status, body, int(rng.end-rng.start), false), nil
}

// fileBody is a cached blob on its way to a client. WriteTo hands the file
// itself (or a LimitedReader over it) to fasthttp's writer, whose ReadFrom
// turns that into sendfile; Close logs the exchange.
type fileBody struct {
	file  *os.File
	limit *io.LimitedReader
	ex    *exchange
	sent  int64
	err   error
}

func (b *fileBody) src() io.Reader {
	if b.limit != nil {
		return b.limit
	}
	return b.file
}

func (b *fileBody) Read(p []byte) (int, error) {
	n, err := b.src().Read(p)
	b.sent += int64(n)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func (b *fileBody) WriteTo(w io.Writer) (int64, error) {
	var n int64
	var err error
	if rf, ok := w.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(b.src())
	} else {
		n, err = io.Copy(w, b.src())
	}
	b.sent += n
	b.err = err
	return n, err
}

func (b *fileBody) Close() error {
	err := b.file.Close()
	if b.ex != nil {
		b.ex.done(b.sent, b.err)
		b.ex = nil
	}
	return err
}

// serveFill answers a client from a fill in progress, once upstream has
// answered: the client gets bytes as they arrive, Range included. The
// status line and headers go out at once (flush), not when the first few
// KiB of a slow body have filled fasthttp's write buffer.
func (s *Server) serveFill(ctx *fasthttp.RequestCtx, ex *exchange, rq request, f *fill) (reply, error) {
	ex.follow(f)
	ticket := f.enter()
	size, err := f.startResult()
	if errors.Is(err, errCannotFit) {
		share, reserved := f.handedOff(ticket)
		return s.servePassThroughVia(ctx, ex, rq, reasonCannotFit, share, reserved)
	}
	if err != nil {
		return reply{}, err
	}
	file, err := f.writer.OpenReader()
	if err != nil {
		return s.serveEndedFill(ctx, ex, rq, f)
	}
	setBlobHeaders(ctx, f.digest.String())
	rng, status, err := applyRange(ctx, size)
	if err != nil {
		file.Close()
		return reply{}, err
	}
	r := &follower{fill: f, file: file, off: rng.start, end: rng.end}
	r.fallback = s.fillFallback(f, size)
	length := rng.end - rng.start
	if size < 0 {
		r.end, length = -1, -1 // chunked: the client sees the end only when the digest checked out
	}
	f.followers.Add(1)
	r.onClose = func(sent int64, err error) {
		f.followers.Add(-1)
		ex.done(sent, err)
	}
	return streamReply(status, r, int(length), true), nil
}

// serveEndedFill answers a client that came as the fill ended, with how it
// ended: the blob now cached, else the fill's error. A fill that ran out of
// disk space leaves this client the pass-through its followers get; a blob
// evicted between the commit and this client's open is errFillEvicted, for
// blobDownload to start over.
func (s *Server) serveEndedFill(ctx *fasthttp.RequestCtx, ex *exchange, rq request, f *fill) (reply, error) {
	if err := f.wait(); isNoSpace(err) {
		return s.servePassThrough(ctx, ex, rq, reasonDiskFull)
	} else if err != nil {
		return reply{}, err
	}
	cached, info, err := s.blobs.Open(f.digest)
	if errors.Is(err, cache.ErrNotFound) {
		return reply{}, fmt.Errorf("%w: %s", errFillEvicted, f.digest)
	}
	if err != nil {
		return reply{}, err
	}
	return s.serveFile(ctx, ex, cached, info)
}

// errFillEvicted: a fill's blob was evicted before a client that came as
// the fill ended could open it.
var errFillEvicted = errors.New("the blob was evicted as its fill ended")

// fillFallback is how a follower of f (whose blob has size bytes) goes on
// when the fill fails for lack of disk space: it streams the rest from the
// shared pass-through of the digest, whose bytes before its offset come
// from the fill's temp file.
func (s *Server) fillFallback(f *fill, size int64) func(prefix io.ReaderAt, prefixEnd, off, end int64) (*passReader, error) {
	return func(prefix io.ReaderAt, prefixEnd, off, end int64) (*passReader, error) {
		s.log.Warn("disk full: streaming the rest from upstream without caching", "digest", f.digest, "offset", off)
		pr := s.joinPass(f.request, reasonDiskFull, prefix, prefixEnd, off, end)
		n, err := pr.p.startResult()
		if err == nil && n != size {
			err = fmt.Errorf("%w: %d bytes, %d before", errUpstreamLength, n, size)
		}
		if err != nil {
			pr.Close()
			return nil, err
		}
		pr.seek(off, end)
		return pr, nil
	}
}

// servePassThrough answers a blob GET from the shared upstream download of
// its digest, without caching (see passthrough.go): the disk is full, or
// the blob cannot fit in the cache. A download running for another
// repository is shared only once upstream shows the blob in rq's as well
// (private registries, see confirmInRepo): a pass-through is keyed by
// digest, like the cache.
func (s *Server) servePassThrough(ctx *fasthttp.RequestCtx, ex *exchange, rq request, reason string) (reply, error) {
	if p := s.passes.joinable(rq.ref.digest); p != nil && !p.rq.sameRepo(rq) {
		if err := s.confirmInRepo(rq, rq.ref.digest, resourceBlob); err != nil {
			return reply{}, err
		}
	}
	return s.servePassThroughVia(ctx, ex, rq, reason, nil, false)
}

// servePassThroughVia is servePassThrough for a client of a fill that handed
// its body to share (holding a place for it when reserved).
func (s *Server) servePassThroughVia(ctx *fasthttp.RequestCtx, ex *exchange, rq request, reason string, share *passShare, reserved bool) (reply, error) {
	ex.outcome = OutcomeBypass
	r := s.joinPassVia(share, reserved, rq, reason, nil, 0, 0, -1)
	size, err := r.p.startResult()
	if err != nil {
		r.Close()
		return reply{}, err
	}
	setBlobHeaders(ctx, rq.ref.digest.String())
	rng, status, err := applyRange(ctx, size)
	if err != nil {
		r.Close()
		return reply{}, err
	}
	end, length := rng.end, rng.end-rng.start
	if size < 0 {
		end, length = -1, -1
	}
	r.seek(rng.start, end)
	r.onClose = func(sent int64, err error) { ex.done(sent, err) }
	return streamReply(status, r, int(length), true), nil
}
