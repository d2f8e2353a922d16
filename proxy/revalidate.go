package proxy

import (
	"context"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
)

// ErrUpstreamOut is returned by RevalidateTag while the registry is marked
// out after a failure (the outage back-off, or a 429's Retry-After), or
// while its pull budget is low and the tag is cached: the caller should
// try again later instead of adding to the load.
var ErrUpstreamOut = errors.New("upstream is backing off after a failure")

// TagCheck is what RevalidateTag found.
type TagCheck struct {
	// Digest is what the tag points to now, as the cache records it.
	Digest digest.Digest
	// Previous is what the cache recorded before ("" if nothing).
	Previous digest.Digest
	// Outcome is how the tag was answered: OutcomeRevalidated (unchanged),
	// OutcomeMiss (fetched: new or moved), OutcomeHit (an immutable tag
	// kept although upstream moved it, see tag_policy), or OutcomeStale
	// (upstream failed).
	Outcome Outcome
}

// Moved reports whether the tag now points elsewhere than before.
func (c TagCheck) Moved() bool { return c.Previous != c.Digest }

// RevalidateTag asks upstream what registry/repo:tag points to now (a HEAD
// when the tag is cached, whatever its age), fetches a moved tag's
// manifest into the cache and records it: the revalidation a client pull
// of an expired tag does, shared with any client asking at the same moment
// (one flight per tag). The watch list uses it.
func (s *Server) RevalidateTag(ctx context.Context, registry, repo, tag string) (TagCheck, error) {
	if s.opts.Offline {
		return TagCheck{}, fmt.Errorf("%w: %s/%s:%s", errOffline, registry, repo, tag)
	}
	up, err := s.routes.named(registry)
	if err != nil {
		return TagCheck{}, err
	}
	if err := validateName(repo); err != nil {
		return TagCheck{}, err
	}
	ref, err := parseReference(tag)
	if err != nil || ref.tag == "" {
		return TagCheck{}, fmt.Errorf("%w: tag %q", errNameInvalid, tag)
	}
	rq := request{up: up, registry: up.Name(), repo: up.Repository(repo), ref: ref}
	if s.health.out(rq.registry, s.opts.Now()) {
		return TagCheck{}, fmt.Errorf("%w: %s", ErrUpstreamOut, rq.registry)
	}
	rec, err := s.tags.Tag(rq.registry, rq.repo, tag)
	if err != nil && !errors.Is(err, cache.ErrNotFound) {
		return TagCheck{}, err
	}
	if rec.Digest != "" && s.shielded(rq.registry) {
		// The pull budget is low: refreshTag would serve the cached tag
		// without asking, which is backing off, not a failure.
		return TagCheck{}, fmt.Errorf("%w: %s's pull budget is low", ErrUpstreamOut, rq.registry)
	}
	pol := s.tagPolicy(rq)
	ch := s.flights.DoChan(tagKeyOf(rq).flight(), s.tagFlight(rq, func() (tagResult, error) { return s.refreshTagDetached(rq, rec, pol) }))
	select {
	case <-ctx.Done():
		return TagCheck{}, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return TagCheck{}, r.Err
		}
		res := r.Val.(tagResult)
		return TagCheck{Digest: res.m.info.Digest, Previous: rec.Digest, Outcome: res.outcome}, nil
	}
}
