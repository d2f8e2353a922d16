package proxy

import (
	"context"

	"github.com/opencontainers/go-digest"
	"github.com/valyala/fasthttp"
)

// BlobRedirector is an optional capability of an Upstream: a URL the
// client may fetch blob d from itself (a presigned URL of a shared store
// that holds it), or ok false. The proxy asks it for a blob GET it cannot
// answer from the cache and no fill is running for; it answers 307.
type BlobRedirector interface {
	BlobRedirect(ctx context.Context, repo string, d digest.Digest) (url string, ok bool)
}

// OutcomeRedirect: a blob answered with a 307 to a shared store's URL
// (BlobRedirector); nothing was fetched or cached.
const OutcomeRedirect Outcome = "redirect"

// redirectBlob answers a miss with a 307 when rq's upstream offers a URL.
// The mirror's own pulls (preload, pins), an admin's (a remote preload
// through this server) and peers' requests are never redirected: they are
// asked to fill this node's cache, and an admin's client would carry its
// credentials along.
func (s *Server) redirectBlob(ctx *fasthttp.RequestCtx, ex *exchange, rq request) (reply, bool) {
	r, ok := s.plain[rq.registry].(BlobRedirector)
	if !ok || s.fills.get(rq.ref.digest) != nil || ex.user == peerUser || s.internalClient(ctx) ||
		s.opts.Access != nil && ex.user != "" && s.opts.Access.IsAdmin(ex.user) {
		return reply{}, false
	}
	if !s.linked(rq, rq.ref.digest) {
		// With private registries, a repository gets a digest it did not
		// fetch only through confirmInRepo, on the path a redirect skips.
		return reply{}, false
	}
	uctx, cancel := context.WithTimeout(s.fillCtx, s.opts.UpstreamTimeout)
	defer cancel()
	url, ok := r.BlobRedirect(uctx, rq.repo, rq.ref.digest)
	if !ok {
		return reply{}, false
	}
	ex.outcome = OutcomeRedirect
	ctx.Response.Header.Set("Location", url)
	ctx.Response.Header.Set("Docker-Content-Digest", rq.ref.digest.String())
	return reply{status: fasthttp.StatusTemporaryRedirect}, true
}
