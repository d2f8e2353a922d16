package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/tagpolicy"
)

// tagPolicy is the freshness rule for rq's tag: the first [[tag_policy]]
// rule that matches, else the global TagTTL.
func (s *Server) tagPolicy(rq request) tagpolicy.Decision {
	d := s.opts.TagPolicy.Lookup(rq.registry, rq.repo, rq.ref.tag)
	if d.Rule < 0 {
		d.TTL = s.opts.TagTTL
	}
	return d
}

// maxBackgroundRevalidations bounds the stale-while-revalidate
// revalidations running at once; beyond it an expired tag is still answered
// from the cache and the next request tries again.
const maxBackgroundRevalidations = 16

// backgroundRevalidations tracks the revalidations started for
// stale-while-revalidate tags: at most one per tag at a time, and at most
// maxBackgroundRevalidations in all.
type backgroundRevalidations struct {
	mu      sync.Mutex
	running map[string]bool
}

// revalidateInBackground starts a revalidation of rq's tag, detached from
// the client (bounded by UpstreamTimeout, cancelled at shutdown), unless
// one runs for that tag or too many run. It shares the client flight key:
// a client that finds the tag expired meanwhile joins it.
func (s *Server) revalidateInBackground(rq request, rec cache.TagRecord, pol tagpolicy.Decision) {
	key := tagKeyOf(rq).flight()
	bg := &s.background
	bg.mu.Lock()
	if bg.running == nil {
		bg.running = map[string]bool{}
	}
	if bg.running[key] || len(bg.running) >= maxBackgroundRevalidations {
		bg.mu.Unlock()
		return
	}
	if !s.fillsAlive.start() {
		bg.mu.Unlock()
		return // shutting down: the client has its answer from the cache
	}
	bg.running[key] = true
	bg.mu.Unlock()
	go func() {
		defer s.fillsAlive.done()
		defer func() {
			bg.mu.Lock()
			delete(bg.running, key)
			bg.mu.Unlock()
		}()
		start := time.Now()
		_, err, _ := s.flights.Do(key, s.tagFlight(rq, func() (tagResult, error) { return s.refreshTagDetached(rq, rec, pol) }))
		s.metrics.backgroundRevalidation(err)
		if err != nil {
			s.log.Warn("background revalidation failed", "registry", rq.registry, "repo", rq.repo, "tag", rq.ref.tag, "err", err)
			return
		}
		s.log.Debug("background revalidation done", "registry", rq.registry, "repo", rq.repo, "tag", rq.ref.tag,
			"duration_s", time.Since(start).Round(time.Millisecond).Seconds())
	}()
}

// tagResult is what a tag flight shares with everyone who joined it.
type tagResult struct {
	m       manifest
	outcome Outcome
}

// immutableTag serves an immutable tag whose cached manifest was evicted:
// the tag still means the digest recorded, fetched by digest (verified)
// without asking what the tag points to now. ok is false when there is no
// record, the repository link is unconfirmed (private registries), or
// upstream cannot give that digest: the caller then asks by tag.
func (s *Server) immutableTag(ctx context.Context, rq request, rec cache.TagRecord) (manifest, bool) {
	if rec.Digest == "" || !s.linked(rq, rec.Digest) {
		return manifest{}, false
	}
	if _, err := s.blobs.Stat(rec.Digest); err == nil {
		return manifest{}, false // cached: the caller is revalidating on purpose (the watch list)
	}
	m, err := s.fetchManifest(ctx, rq, rec.Digest.String(), rec.Digest)
	if err != nil {
		s.log.Warn("immutable tag: its recorded manifest could not be fetched by digest; asking by tag", "registry", rq.registry,
			"repo", rq.repo, "tag", rq.ref.tag, "digest", rec.Digest, "err", err)
		return manifest{}, false
	}
	return m, true
}

// immutableMoved is called when upstream shows an immutable tag pointing
// elsewhere than the cache says: this is logged and counted, and the
// cached manifest is served (ok) and the record kept; it is replaced only
// when that manifest can no longer be served.
func (s *Server) immutableMoved(rq request, rec cache.TagRecord, upstreamDigest digest.Digest, pol tagpolicy.Decision) (manifest, bool) {
	s.metrics.immutableMoved.Inc()
	m, err := s.cachedManifest(rec.Digest)
	kept := err == nil && s.linked(rq, rec.Digest)
	s.log.Warn("immutable tag moved upstream", "registry", rq.registry, "repo", rq.repo, "tag", rq.ref.tag,
		"rule", pol.Match, "cached", rec.Digest, "upstream", upstreamDigest, "kept_cached", kept)
	return m, kept
}
