package proxy

import (
	"errors"
	"fmt"
	"net/url"

	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/upstream"
)

// serveTags passes /v2/<name>/tags/list through to upstream, and keeps the
// last full answer to serve while upstream is down or the mirror offline.
func (s *Server) serveTags(ctx *fasthttp.RequestCtx, ex *exchange, rq request) {
	query := url.Values{}
	for _, key := range []string{"n", "last"} {
		if v := ctx.QueryArgs().Peek(key); len(v) > 0 {
			query.Set(key, string(v))
		}
	}
	whole := len(query) == 0
	var body []byte
	var err error
	if s.opts.Offline {
		err = fmt.Errorf("%w: tags of %s/%s", errOffline, rq.registry, rq.repo)
	} else if whole && s.health.out(rq.registry, s.opts.Now()) {
		err = fmt.Errorf("%w: %s is marked out after failing to answer", upstream.ErrUnavailable, rq.registry)
	} else {
		uctx, cancel := s.upstreamContext()
		body, err = rq.up.ListTags(uctx, rq.repo, query.Encode())
		cancel()
		s.metrics.upstreamRequest("tags", err)
		if isUpstreamOutage(err) {
			s.health.failed(rq.registry, err, s.opts.Now(), s.opts.OutageBackoff)
		}
		if err == nil {
			ex.outcome = "miss"
			if whole {
				if err := s.store.SetTagList(rq.registry, rq.repo, body); err != nil {
					s.log.Warn("caching tag list", "repo", rq.repo, "err", err)
				}
			}
		}
	}
	if err != nil && whole && (s.opts.Offline || isUpstreamOutage(err)) {
		cached, cerr := s.store.TagList(rq.registry, rq.repo)
		if cerr == nil {
			body, err, ex.outcome = cached, nil, "stale"
			s.metrics.staleServed.Inc()
		} else if !errors.Is(cerr, cache.ErrNotFound) {
			s.log.Warn("reading cached tag list", "repo", rq.repo, "err", cerr)
		}
	}
	if err != nil {
		writeError(ctx, err, resourceRepository)
		return
	}
	ctx.SetContentType("application/json")
	if ctx.IsHead() {
		ctx.Response.Header.SetContentLength(len(body))
		return
	}
	ctx.SetBody(body)
}
