package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Blob is a blob body being received.
type Blob struct {
	// Body is the content from Offset on. Reads that make no progress for
	// StallTimeout fail with ErrUnavailable, as do cut bodies. Close it.
	Body io.ReadCloser
	// Offset is where Body starts in the blob: the requested offset, or 0
	// if the server ignored the Range.
	Offset int64
	// Size is the blob's total size (from Content-Range or Content-Length),
	// or -1 if unknown.
	Size int64
	// Refute, if set, is for the caller that read Body from offset 0 to
	// its end and found content that is not the digest asked for: it tells
	// the source (a mirror is not asked for that digest again, a corrupt
	// S3 object is deleted). Sources do not hash what they send; the
	// caller's own check, which it makes anyway before it stores or
	// finishes a body, is the one that keeps wrong content out.
	Refute func()
	// Tier names the shared tier that sent Body ("s3", "peer"), or is ""
	// for the registry itself: only the registry's bytes are upstream
	// traffic (metrics, the status page's savings).
	Tier string
}

// Refuted tells b's source, once, that its whole body was not the digest
// asked for (see Refute); a no-op when the source does not ask to be told.
// A body has one reader, so no lock is taken.
func (b *Blob) Refuted() {
	if refute := b.Refute; refute != nil {
		b.Refute = nil
		refute()
	}
}

// GetBlob starts downloading blob d of repo from offset (offset > 0 sends
// "Range: bytes=<offset>-"). Redirects (CDNs) are followed under the
// redirect policy (see checkRedirect): the Authorization header is not sent
// to another scheme, host or port. The body is not verified here: the
// caller hashes what it stores.
func (r *Registry) GetBlob(ctx context.Context, repo string, d digest.Digest, offset int64) (*Blob, error) {
	repo, err := r.checkRepo(repo)
	if err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("%w: digest %q: %v", ErrInvalidName, d, err)
	}
	if offset < 0 {
		return nil, fmt.Errorf("%w: negative offset %d", ErrInvalidName, offset)
	}
	req := request{method: http.MethodGet, repo: repo, path: "blobs/" + d.String(), header: http.Header{}}
	if offset > 0 {
		req.header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	what := "GET blob " + repo + "@" + d.String()
	bctx, cancel := context.WithCancelCause(ctx)
	resp, err := r.do(bctx, req)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	b := &Blob{Offset: 0, Size: -1}
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength >= 0 {
			b.Size = resp.ContentLength
		}
	case http.StatusPartialContent:
		start, total, ok := ParseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			drain(resp)
			cancel(nil)
			return nil, fmt.Errorf("%w: %s: asked for bytes %d-, got Content-Range %q", ErrUnavailable, what, offset, resp.Header.Get("Content-Range"))
		}
		b.Offset, b.Size = start, total
	default:
		err := r.checkResponse(resp, http.StatusOK, http.StatusPartialContent)
		drain(resp)
		cancel(nil)
		return nil, err
	}
	b.Body = r.guard(bctx, cancel, resp.Body, what)
	return b, nil
}

// HeadBlob returns the size of blob d of repo without downloading it (from
// Content-Length; -1 if the upstream sent none). Redirects are followed. A
// Docker-Content-Digest that names another digest is ErrUnavailable.
func (r *Registry) HeadBlob(ctx context.Context, repo string, d digest.Digest) (int64, error) {
	repo, err := r.checkRepo(repo)
	if err != nil {
		return 0, err
	}
	if err := d.Validate(); err != nil {
		return 0, fmt.Errorf("%w: digest %q: %v", ErrInvalidName, d, err)
	}
	resp, err := r.do(ctx, request{method: http.MethodHead, repo: repo, path: "blobs/" + d.String()})
	if err != nil {
		return 0, err
	}
	defer drain(resp)
	if err := r.checkResponse(resp, http.StatusOK); err != nil {
		return 0, err
	}
	if hd := resp.Header.Get("Docker-Content-Digest"); hd != "" && hd != d.String() {
		return 0, fmt.Errorf("%w: HEAD blob %s@%s: upstream says %s", ErrUnavailable, repo, d, hd)
	}
	n, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64)
	if err != nil || n < 0 {
		return -1, nil
	}
	return n, nil
}

// ParseContentRange parses a 206 answer's Content-Range, "bytes
// <start>-<end>/<total|*>"; total is -1 for "*". Every source that resumes
// a blob with a Range request (upstream, the S3 tier, an owner peer) reads
// it here.
func ParseContentRange(v string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	s, e, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(s, 10, 64)
	end, err2 := strconv.ParseInt(e, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t <= end {
			return 0, 0, false
		}
		total = t
	}
	return start, total, true
}

var errStalled = errors.New("stalled")

// guard wraps body so that a Read making no progress for StallTimeout
// cancels the request (ctx must be the request's context and cancel its
// cancel function) and read errors become ErrUnavailable. Close cancels.
func (r *Registry) guard(ctx context.Context, cancel context.CancelCauseFunc, body io.ReadCloser, what string) io.ReadCloser {
	g := &guardedBody{ctx: ctx, cancel: cancel, body: body, stall: r.opts.StallTimeout, what: what}
	g.timer = r.afterFunc(time.Hour, func() { cancel(errStalled) })
	g.timer.Stop()
	return g
}

// stallTimer is what the stall guard needs of a *time.Timer.
type stallTimer interface {
	Reset(time.Duration) bool
	Stop() bool
}

// realAfterFunc is time.AfterFunc as a stallTimer maker; tests replace
// Registry.afterFunc to fire the stall by hand.
func realAfterFunc(d time.Duration, f func()) stallTimer { return time.AfterFunc(d, f) }

type guardedBody struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	body   io.ReadCloser
	stall  time.Duration
	timer  stallTimer
	what   string
	once   sync.Once
}

func (g *guardedBody) Read(p []byte) (int, error) {
	g.timer.Reset(g.stall)
	n, err := g.body.Read(p)
	g.timer.Stop()
	if err == nil || err == io.EOF {
		return n, err
	}
	if errors.Is(context.Cause(g.ctx), errStalled) {
		return n, fmt.Errorf("%w: %s: no data for %v", ErrUnavailable, g.what, g.stall)
	}
	return n, classify(g.ctx, g.what+": reading body", err)
}

func (g *guardedBody) Close() error {
	g.once.Do(func() {
		g.timer.Stop()
		g.body.Close()
		g.cancel(nil)
	})
	return nil
}
