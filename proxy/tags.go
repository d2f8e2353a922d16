package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/upstream"
)

// serveTags passes /v2/<name>/tags/list through to upstream, and keeps the
// last full answer to serve while upstream is down or the mirror offline.
// A page of a paginated listing (n, last) is passed through only; when
// upstream says there is a next page, so does the answer (nextPageLink).
func (s *Server) serveTags(ctx *fasthttp.RequestCtx, ex *exchange, rq request) (reply, error) {
	// Checked here: upstream's 400 would be no answer to keep or serve.
	if _, _, err := pageSize(ctx.QueryArgs()); err != nil {
		return reply{}, err
	}
	query := url.Values{}
	for _, key := range []string{"n", "last"} {
		if v := ctx.QueryArgs().Peek(key); len(v) > 0 {
			query.Set(key, string(v))
		}
	}
	kept := keptRecord{
		load: func() ([]byte, error) { return s.answers.TagList(rq.registry, rq.repo) },
		save: func(body []byte) error { return s.answers.SetTagList(rq.registry, rq.repo, body) },
	}
	var next url.Values
	body, outcome, err := s.keptAnswer(rq, rq.repo, "tags", kept, len(query) == 0,
		func(uctx context.Context) ([]byte, error) {
			page, err := rq.up.ListTags(uctx, rq.repo, query.Encode())
			next = page.Next
			return page.Body, err
		})
	ex.outcome = outcome
	if err != nil {
		return reply{}, err
	}
	if next != nil && outcome == OutcomeMiss {
		ctx.Response.Header.Set("Link", nextPageLink(ex.path, ctx.QueryArgs(), next))
	}
	return bodyReply("application/json", body), nil
}

// nextPageLink is the Link header that points a client to the next page of
// a paginated list (tags, the catalog): the path it asked, with its query
// (ns included) but for n and last, which are the next page's.
func nextPageLink(path string, asked *fasthttp.Args, next url.Values) string {
	query := url.Values{}
	for k, v := range asked.All() {
		if key := string(k); key != "n" && key != "last" {
			query.Add(key, string(v))
		}
	}
	for k, vs := range next {
		query[k] = vs
	}
	return "<" + path + "?" + query.Encode() + `>; rel="next"`
}

// keptRecord is the cache record where keptAnswer keeps an answer.
type keptRecord struct {
	load func() ([]byte, error)
	save func(body []byte) error
}

// keptAnswer gets a small answer (a tag list, a referrers index) from
// upstream and, when keep is set, stores the last one in the cache's
// record kept (key names it in logs). When the mirror is offline, or upstream cannot
// answer (down, 5xx, 429, or marked out after failing), the kept answer is
// served instead: OutcomeHit offline, OutcomeStale otherwise.
func (s *Server) keptAnswer(rq request, key, kind string, kept keptRecord, keep bool, fetch func(context.Context) ([]byte, error)) ([]byte, Outcome, error) {
	var err error
	switch {
	case s.opts.Offline:
		err = fmt.Errorf("%w: %s of %s/%s", errOffline, kind, rq.registry, key)
	case keep && s.health.out(rq.registry, s.opts.Now()):
		err = fmt.Errorf("%w: %s is marked out after failing to answer", upstream.ErrUnavailable, rq.registry)
	default:
		uctx, cancel := s.upstreamContext()
		body, ferr := fetch(uctx)
		cancel()
		if ferr == nil {
			if keep {
				if err := kept.save(body); err != nil {
					s.log.Warn("keeping an answer", "kind", kind, "registry", rq.registry, "key", key, "err", err)
				}
			}
			return body, OutcomeMiss, nil
		}
		if isUpstreamOutage(ferr) {
			s.health.failed(rq.registry, ferr, s.opts.Now(), s.opts.OutageBackoff)
		}
		err = ferr
	}
	if !keep || !(s.opts.Offline || isUpstreamOutage(err)) {
		return nil, OutcomeNone, err
	}
	body, kerr := kept.load()
	if kerr != nil {
		if !errors.Is(kerr, cache.ErrNotFound) {
			s.log.Warn("reading a kept answer", "kind", kind, "registry", rq.registry, "key", key, "err", kerr)
		}
		return nil, OutcomeNone, err
	}
	if s.opts.Offline {
		return body, OutcomeHit, nil
	}
	return body, OutcomeStale, nil
}
