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

// serveBlob answers GET and HEAD of /v2/<name>/blobs/<digest>. It reports
// whether the response body is a stream whose Close logs the exchange.
func (s *Server) serveBlob(ctx *fasthttp.RequestCtx, ex *exchange, rq request) bool {
	d := rq.ref.digest
	for attempt := 0; attempt < 2; attempt++ {
		file, info, err := s.store.Open(d)
		if err == nil {
			if err := s.confirmInRepo(rq, d, resourceBlob); err != nil {
				file.Close()
				writeError(ctx, err, resourceBlob)
				return false
			}
			ex.outcome = "hit"
			return s.serveFile(ctx, ex, file, info)
		}
		if !errors.Is(err, cache.ErrNotFound) {
			writeError(ctx, err, resourceBlob)
			return false
		}
		if s.opts.Offline {
			writeError(ctx, fmt.Errorf("%w: %s", errOffline, d), resourceBlob)
			return false
		}
		if ctx.IsHead() {
			ex.outcome = "miss"
			s.headBlobUpstream(ctx, rq)
			return false
		}
		if s.diskFull() {
			ex.outcome = "bypass"
			return s.servePassThrough(ctx, ex, rq)
		}
		f, joined, err := s.joinFill(rq)
		if isNoSpace(err) {
			ex.outcome = "bypass"
			return s.servePassThrough(ctx, ex, rq)
		}
		if err != nil {
			writeError(ctx, err, resourceBlob)
			return false
		}
		if f == nil {
			continue // the blob reached the cache meanwhile
		}
		ex.outcome = "miss"
		if joined {
			ex.outcome = "join"
		}
		if f.request.registry != rq.registry || f.request.repo != rq.repo {
			// A fill started for another repository: for a private
			// registry, upstream must show the blob in this one too.
			if err := s.confirmInRepo(rq, d, resourceBlob); err != nil {
				writeError(ctx, err, resourceBlob)
				return false
			}
		}
		return s.serveFill(ctx, ex, f)
	}
	writeError(ctx, fmt.Errorf("%w: %s vanished from the cache", errNotCached, d), resourceBlob)
	return false
}

// headBlobUpstream answers a HEAD for a blob that is not cached without
// downloading it: from a fill in progress, else from upstream's HEAD.
func (s *Server) headBlobUpstream(ctx *fasthttp.RequestCtx, rq request) {
	d := rq.ref.digest
	size := int64(-1)
	if f := s.fills.get(d); f != nil && len(s.opts.PrivateRegistries) == 0 {
		if n, err := f.startResult(); err == nil {
			size = n
		}
	}
	if size < 0 {
		uctx, cancel := context.WithTimeout(s.fillCtx, s.opts.UpstreamTimeout)
		defer cancel()
		n, err := rq.up.HeadBlob(uctx, rq.repo, d)
		if err != nil {
			writeError(ctx, err, resourceBlob)
			return
		}
		size = n
	}
	setBlobHeaders(ctx, rq.ref.digest.String())
	ctx.Response.Header.SetContentLength(int(size))
}

func setBlobHeaders(ctx *fasthttp.RequestCtx, d string) {
	ctx.SetContentType(blobContentType)
	ctx.Response.Header.Set("Docker-Content-Digest", d)
	ctx.Response.Header.Set("ETag", `"`+d+`"`)
	ctx.Response.Header.Set("Accept-Ranges", "bytes")
	ctx.Response.Header.Set("Cache-Control", "max-age=31536000")
}

// byteRange is one satisfiable range of a body: [start, end).
type byteRange struct{ start, end int64 }

// errRangeNotSatisfiable is answered with 416.
var errRangeNotSatisfiable = errors.New("range not satisfiable")

// parseRange reads a Range header against a body of size bytes. It returns
// nil for no header, and also for forms it does not serve (several ranges,
// other units), which RFC 9110 lets a server answer with the whole body.
func parseRange(header string, size int64) (*byteRange, error) {
	spec, ok := strings.CutPrefix(header, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return nil, nil
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return nil, nil
	}
	if first == "" { // suffix: the last N bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return nil, nil
		}
		if n == 0 || size == 0 {
			return nil, errRangeNotSatisfiable
		}
		return &byteRange{start: max(size-n, 0), end: size}, nil
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return nil, nil
	}
	end := size
	if last != "" {
		e, err := strconv.ParseInt(last, 10, 64)
		if err != nil || e < start {
			return nil, nil
		}
		end = min(e+1, size)
	}
	if start >= size {
		return nil, errRangeNotSatisfiable
	}
	return &byteRange{start: start, end: end}, nil
}

// applyRange sets status and length headers for a body of size bytes and
// returns the part to send; ok is false when a 416 was written.
func applyRange(ctx *fasthttp.RequestCtx, size int64) (r byteRange, ok bool) {
	full := byteRange{0, size}
	header := string(ctx.Request.Header.Peek("Range"))
	if header == "" || size < 0 {
		return full, true
	}
	rng, err := parseRange(header, size)
	if err != nil {
		ctx.SetStatusCode(http.StatusRequestedRangeNotSatisfiable)
		ctx.Response.Header.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		return full, false
	}
	if rng == nil {
		return full, true
	}
	ctx.SetStatusCode(http.StatusPartialContent)
	ctx.Response.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rng.start, rng.end-1, size))
	return *rng, true
}

// serveFile streams a cached blob. A whole file goes out by sendfile; so
// does a range, as a LimitedReader over the file (fasthttp keeps both on
// its zero-copy path).
func (s *Server) serveFile(ctx *fasthttp.RequestCtx, ex *exchange, file *os.File, info cache.BlobInfo) bool {
	setBlobHeaders(ctx, info.Digest.String())
	rng, ok := applyRange(ctx, info.Size)
	if !ok || ctx.IsHead() {
		file.Close()
		ctx.Response.Header.SetContentLength(int(rng.end - rng.start))
		if !ok {
			ctx.Response.Header.SetContentLength(0)
		}
		return false
	}
	body := &fileBody{file: file, ex: ex}
	if rng.start > 0 || rng.end < info.Size {
		if _, err := file.Seek(rng.start, io.SeekStart); err != nil {
			file.Close()
			writeError(ctx, err, resourceBlob)
			return false
		}
		body.limit = &io.LimitedReader{R: file, N: rng.end - rng.start}
	}
	s.metrics.servedFromCache.Add(float64(rng.end - rng.start))
	ex.status = ctx.Response.StatusCode()
	ctx.Response.SetBodyStream(body, int(rng.end-rng.start))
	return true
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
// answered: the client gets bytes as they arrive, Range included.
func (s *Server) serveFill(ctx *fasthttp.RequestCtx, ex *exchange, f *fill) bool {
	size, err := f.startResult()
	if err != nil {
		writeError(ctx, err, resourceBlob)
		return false
	}
	file, err := f.writer.OpenReader()
	if err != nil {
		writeError(ctx, err, resourceBlob)
		return false
	}
	setBlobHeaders(ctx, f.digest.String())
	rng, ok := applyRange(ctx, size)
	if !ok {
		file.Close()
		ctx.Response.Header.SetContentLength(0)
		return false
	}
	r := &follower{fill: f, file: file, off: rng.start, end: rng.end}
	r.fallback = func(prefix io.ReaderAt, off, end int64) (*passThrough, error) {
		s.log.Warn("disk full: streaming the rest from upstream without caching", "digest", f.digest, "offset", off)
		return s.newPassThrough(f.request, prefix, off, end, size)
	}
	length := rng.end - rng.start
	if size < 0 {
		r.end, length = -1, -1 // chunked: the client sees the end only when the digest checked out
	}
	ex.status = ctx.Response.StatusCode()
	r.onClose = func(sent int64, err error) {
		s.metrics.servedFromFill.Add(float64(sent))
		ex.done(sent, err)
	}
	ctx.Response.SetBodyStream(r, int(length))
	return true
}

// servePassThrough answers a blob GET straight from upstream, without
// caching: the disk is full and eviction could not make room.
func (s *Server) servePassThrough(ctx *fasthttp.RequestCtx, ex *exchange, rq request) bool {
	uctx, cancel := context.WithTimeout(s.fillCtx, s.opts.UpstreamTimeout)
	size, err := rq.up.HeadBlob(uctx, rq.repo, rq.ref.digest)
	cancel()
	if err != nil {
		writeError(ctx, err, resourceBlob)
		return false
	}
	setBlobHeaders(ctx, rq.ref.digest.String())
	rng, ok := applyRange(ctx, size)
	if !ok {
		ctx.Response.Header.SetContentLength(0)
		return false
	}
	end, length := rng.end, rng.end-rng.start
	if size < 0 {
		end, length = -1, -1
	}
	p, err := s.newPassThrough(rq, nil, rng.start, end, size)
	if err != nil {
		ctx.Response.Header.Del("Content-Range")
		writeError(ctx, err, resourceBlob)
		return false
	}
	ex.status = ctx.Response.StatusCode()
	p.onClose = func(sent int64, err error) { ex.done(sent, err) }
	ctx.Response.SetBodyStream(p, int(length))
	return true
}
