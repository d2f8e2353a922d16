package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/tagpolicy"
	"github.com/regmirror/regmirror/upstream"
)

// manifest is a verified manifest ready to serve.
type manifest struct {
	body []byte
	info cache.BlobInfo
}

// serveManifest answers GET and HEAD of /v2/<name>/manifests/<reference>.
// Digests are local-first and never expire; tags are remote-first once
// their TTL has passed, with the cache as the fallback.
func (s *Server) serveManifest(ctx *fasthttp.RequestCtx, ex *exchange, rq request) (reply, error) {
	var m manifest
	var err error
	if rq.ref.digest != "" {
		m, ex.outcome, err = s.manifestByDigest(rq)
	} else {
		m, ex.outcome, err = s.manifestByTag(rq)
	}
	if err != nil {
		return reply{}, err
	}
	setDigestHeaders(ctx, m.info.Digest.String())
	if !ctx.IsHead() {
		// A body served hands the client its descriptors: remember their
		// sizes so that a blob fill can refuse a lying length. A HEAD
		// hands over none, and is not worth a parse.
		s.sizes.note(rq.registry, rq.repo, m.info.Digest, m.body)
	}
	return bodyReply(m.info.MediaType, m.body), nil
}

func (s *Server) cachedManifest(d digest.Digest) (manifest, error) {
	body, info, err := s.manifests.ReadAll(d, s.opts.MaxManifestSize)
	return manifest{body, info}, err
}

func (s *Server) upstreamContext() (context.Context, context.CancelFunc) {
	// Detached from the client: others may be waiting on the same flight.
	return context.WithTimeout(s.fillCtx, s.opts.UpstreamTimeout)
}

func (s *Server) manifestByDigest(rq request) (manifest, Outcome, error) {
	d := rq.ref.digest
	m, err := s.cachedManifest(d)
	if err == nil {
		if err := s.confirmInRepo(rq, d, resourceManifest); err != nil {
			return manifest{}, OutcomeNone, err
		}
		return m, OutcomeHit, nil
	}
	// Content under d too large for a manifest (a layer's digest, asked
	// for as a manifest) is for upstream to answer, as if not cached: the
	// answer must not tell what the cache holds.
	if !errors.Is(err, cache.ErrNotFound) && !errors.Is(err, cache.ErrTooLarge) {
		return manifest{}, OutcomeNone, err
	}
	if s.opts.Offline {
		return manifest{}, OutcomeNone, fmt.Errorf("%w: %s", errOffline, d)
	}
	v, err, shared := s.flights.Do("manifest\x00"+rq.registry+"\x00"+rq.repo+"\x00"+d.String(), func() (any, error) {
		if m, err := s.cachedManifest(d); err == nil && s.linked(rq, d) {
			return m, nil
		}
		ctx, cancel := s.upstreamContext()
		defer cancel()
		return s.fetchManifest(ctx, rq, d.String(), d)
	})
	if err != nil {
		return manifest{}, OutcomeNone, err
	}
	return v.(manifest), OutcomeMiss.Joined(shared), nil
}

// fetchManifest gets a manifest from upstream, checks it against want (when
// known) and caches it. A manifest that verified but could not be cached
// (disk trouble) is still served.
func (s *Server) fetchManifest(ctx context.Context, rq request, ref string, want digest.Digest) (manifest, error) {
	body, desc, err := rq.up.GetManifest(ctx, rq.repo, ref)
	if err != nil {
		return manifest{}, err
	}
	got := digest.FromBytes(body)
	if want != "" && got != want {
		return manifest{}, fmt.Errorf("%w: asked for %s, got %s", errUpstreamCorrupt, want, got)
	}
	mediaType := manifestMediaType(desc.MediaType, body)
	put := s.manifests.Put
	if s.isPrivate(rq.registry) {
		put = s.manifests.PutScoped // kept out of the shared tier
	}
	// Under an eviction hold, as a fill writes: a Put racing eviction's
	// delete of the same digest waits for it to end, so that the delete's
	// late notice cannot make eviction forget the manifest just stored.
	release := s.hold(got)
	info, err := put(got, mediaType, body)
	release()
	if err != nil {
		s.log.Error("caching manifest", "registry", rq.registry, "repo", rq.repo, "digest", got, "err", err)
		info = cache.BlobInfo{Digest: got, Size: int64(len(body)), MediaType: mediaType}
	} else if err := s.links.AddLink(rq.registry, rq.repo, got); err != nil {
		s.log.Warn("recording repository link", "digest", got, "err", err)
	}
	return manifest{body, info}, nil
}

// manifestMediaType prefers the upstream's Content-Type and falls back to
// the manifest's own mediaType field when upstream sent something generic.
func manifestMediaType(contentType string, body []byte) string {
	contentType, _, _ = strings.Cut(contentType, ";")
	contentType = strings.TrimSpace(contentType)
	if contentType != "" && contentType != "application/json" && contentType != "text/plain" && contentType != "application/octet-stream" {
		return contentType
	}
	var probe struct {
		MediaType string `json:"mediaType"`
	}
	if json.Unmarshal(body, &probe) == nil && probe.MediaType != "" {
		return probe.MediaType
	}
	if contentType != "" {
		return contentType
	}
	return "application/vnd.oci.image.manifest.v1+json"
}

func (s *Server) manifestByTag(rq request) (manifest, Outcome, error) {
	tag, key := rq.ref.tag, tagKeyOf(rq)
	if w := s.tagWaits.find(key); w != nil {
		// Being revalidated: its answer is at least as fresh as the
		// record, so a storm of clients on one expired tag reads the
		// index once, not once per client.
		w.joined.Add(1)
		<-w.done
		if w.err != nil {
			return manifest{}, OutcomeNone, w.err
		}
		return w.r.m, w.r.outcome.Joined(true), nil
	}
	pol := s.tagPolicy(rq) // [[tag_policy]]: ttl, immutable, stale_while_revalidate
	rec, err := s.tags.Tag(rq.registry, rq.repo, tag)
	switch {
	case err == nil:
		fresh := pol.Fresh(rec.CheckedAt, s.opts.Now())
		// A private registry's tag whose manifest is not linked to this
		// repository is revalidated: upstream's answer confirms it.
		if (fresh || s.opts.Offline || pol.StaleWhileRevalidate) && s.linked(rq, rec.Digest) {
			if m, err := s.cachedManifest(rec.Digest); err == nil {
				if !fresh && !s.opts.Offline {
					s.revalidateInBackground(rq, rec, pol)
				}
				return m, OutcomeHit, nil
			}
			// The manifest was evicted; the tag alone cannot be served.
		}
	case !errors.Is(err, cache.ErrNotFound):
		return manifest{}, OutcomeNone, err
	}
	if s.opts.Offline {
		return manifest{}, OutcomeNone, fmt.Errorf("%w: %s/%s:%s", errOffline, rq.registry, rq.repo, tag)
	}
	v, err, shared := s.flights.Do(key.flight(), s.tagFlight(rq, func() (tagResult, error) {
		w := s.tagWaits.start(key)
		r, err := tagResult{}, error(errTagFlightAborted) // what the joiners get if the flight panics
		defer func() { s.tagWaits.end(key, w, r, err) }()
		r, err = s.revalidateTag(rq, rec, pol)
		return r, err
	}))
	if err != nil {
		return manifest{}, OutcomeNone, err
	}
	r := v.(tagResult)
	return r.m, r.outcome.Joined(shared), nil
}

// revalidateTag is the flight of manifestByTag: one upstream question for
// every client of the tag.
func (s *Server) revalidateTag(rq request, rec cache.TagRecord, pol tagpolicy.Decision) (tagResult, error) {
	// Re-check inside the flight: a request that read the stale record
	// just before another flight refreshed it must not send upstream a
	// second HEAD (a storm of clients on one expired tag causes one).
	if now, err := s.tags.Tag(rq.registry, rq.repo, rq.ref.tag); err == nil && now.CheckedAt.After(rec.CheckedAt) &&
		pol.Fresh(now.CheckedAt, s.opts.Now()) && s.linked(rq, now.Digest) {
		if m, err := s.cachedManifest(now.Digest); err == nil {
			return tagResult{m, OutcomeHit}, nil
		}
	}
	return s.refreshTagDetached(rq, rec, pol)
}

// tagFlight makes run a tag flight's function that turns a panic into the
// flight's error (logged with its stack, counted). singleflight raises a
// flight's panic again in every caller, and for a DoChan caller (the watch
// list) or a background revalidation that happens in a goroutine no
// recover reaches: one bug in a revalidation would end the process.
func (s *Server) tagFlight(rq request, run func() (tagResult, error)) func() (any, error) {
	return func() (v any, err error) {
		defer func() {
			if p := recover(); p != nil {
				s.guard.panics.Inc()
				s.log.Error("panic in a tag revalidation (a bug; its clients get a 500)", "registry", rq.registry,
					"repo", rq.repo, "tag", rq.ref.tag, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				v, err = nil, fmt.Errorf("%w: %v", errPanic, p)
			}
		}()
		return run()
	}
}

// refreshTagDetached is refreshTag under a context of its own: the
// flight's waiters are not one client's to cancel.
func (s *Server) refreshTagDetached(rq request, rec cache.TagRecord, pol tagpolicy.Decision) (tagResult, error) {
	ctx, cancel := s.upstreamContext()
	defer cancel()
	m, how, err := s.refreshTag(ctx, rq, rec, pol)
	return tagResult{m, how}, err
}

// tagWaits are the foreground tag revalidations running now, by flight
// key, for requests to join before they read the tag's record. (The
// singleflight group joins only those that call it; it cannot say whether
// a flight is running.) Background revalidations are not here: their
// clients are answered from the cache at once.
type tagWaits struct {
	mu      sync.Mutex
	running map[tagKey]*tagWait
}

// tagKey names a tag; a struct, so that finding a flight allocates nothing.
type tagKey struct{ registry, repo, tag string }

func tagKeyOf(rq request) tagKey { return tagKey{rq.registry, rq.repo, rq.ref.tag} }

// flight names the one flight that revalidates the tag, whoever starts it:
// a client, the background (stale-while-revalidate) or the watch list.
func (k tagKey) flight() string { return "tag\x00" + k.registry + "\x00" + k.repo + "\x00" + k.tag }

// tagWait is one revalidation's answer, ready when done is closed.
type tagWait struct {
	done      chan struct{}
	published sync.Once
	r         tagResult
	err       error
	joined    atomic.Int64 // requests waiting on it (for tests)
}

// publish sets the answer and lets the joiners go; only the first call
// counts.
func (w *tagWait) publish(r tagResult, err error) {
	w.published.Do(func() {
		w.r, w.err = r, err
		close(w.done)
	})
}

func (t *tagWaits) find(key tagKey) *tagWait {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.running[key]
}

func (t *tagWaits) start(key tagKey) *tagWait {
	w := &tagWait{done: make(chan struct{})}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.running == nil {
		t.running = make(map[tagKey]*tagWait)
	}
	t.running[key] = w
	return w
}

// errTagFlightAborted is the answer of a revalidation that panicked (the
// panic itself reaches the flight's own caller).
var errTagFlightAborted = errors.New("proxy: tag revalidation aborted")

// answered lets the joiners of key's revalidation, if one is running in
// the foreground, go with r before the revalidation has written the tag's
// record: the answer does not wait for the index's fsync (a few ms, more
// under load), and requests that arrive meanwhile still join instead of
// reading the old record and asking upstream again.
func (t *tagWaits) answered(key tagKey, r tagResult) {
	t.mu.Lock()
	w := t.running[key]
	t.mu.Unlock()
	if w != nil {
		w.publish(r, nil)
	}
}

// end publishes the answer, unless answered did, and ends the wait.
func (t *tagWaits) end(key tagKey, w *tagWait, r tagResult, err error) {
	w.publish(r, err)
	t.mu.Lock()
	if t.running[key] == w {
		delete(t.running, key)
	}
	t.mu.Unlock()
}

// refreshTag asks upstream what the tag points to now. With a cached record
// it asks with a HEAD, which Docker Hub does not count as a pull, and
// fetches the manifest only when the digest moved. When upstream cannot
// answer (down, 5xx, rate limited) the cached manifest is served stale. An
// immutable tag (pol) keeps its digest: see immutableTag.
func (s *Server) refreshTag(ctx context.Context, rq request, rec cache.TagRecord, pol tagpolicy.Decision) (manifest, Outcome, error) {
	if pol.Immutable {
		if m, ok := s.immutableTag(ctx, rq, rec); ok {
			return m, OutcomeMiss, nil
		}
	}
	if rec.Digest == "" {
		return s.fetchTag(ctx, rq, rec, "")
	}
	if s.health.out(rq.registry, s.opts.Now()) || s.shielded(rq.registry) {
		if m, ok := s.staleManifest(rq, rec); ok {
			s.log.Debug("serving stale tag: upstream marked out or its pull budget low", "registry", rq.registry, "repo", rq.repo, "tag", rq.ref.tag)
			return m, OutcomeStale, nil
		}
	}
	desc, err := s.headTag(ctx, rq)
	if err != nil {
		return s.staleAfterFailure(rq, rec, err)
	}
	s.health.answered(rq.registry)
	if pol.Immutable && desc.Digest != rec.Digest {
		if m, ok := s.immutableMoved(rq, rec, desc.Digest, pol); ok {
			return m, OutcomeHit, nil
		}
	}
	if desc.Digest == rec.Digest {
		if m, ok := s.confirmTag(rq, rec); ok {
			return m, OutcomeRevalidated, nil
		}
	}
	m, outcome, err := s.fetchTag(ctx, rq, rec, desc.Digest)
	if err != nil {
		// The HEAD answered but the GET of the moved tag's manifest did not
		// (a pull budget spent, a failing GET path): as for a failed HEAD.
		return s.staleAfterFailure(rq, rec, err)
	}
	return m, outcome, nil
}

// headTag asks upstream with a HEAD what rq's tag points to. A
// revalidation has the cached manifest to fall back on, so it waits for
// upstream less than a miss would.
func (s *Server) headTag(ctx context.Context, rq request) (upstream.Descriptor, error) {
	hctx, cancel := context.WithTimeout(ctx, s.opts.RevalidateTimeout)
	defer cancel()
	return rq.up.HeadManifest(hctx, rq.repo, rq.ref.tag)
}

// staleAfterFailure answers a tag whose revalidation failed with err: when
// upstream could not answer, the registry is marked out for a while and
// the cached manifest is served stale; any other error is the answer.
func (s *Server) staleAfterFailure(rq request, rec cache.TagRecord, err error) (manifest, Outcome, error) {
	if !isUpstreamOutage(err) {
		return manifest{}, OutcomeNone, err
	}
	until := s.health.failed(rq.registry, err, s.opts.Now(), s.opts.OutageBackoff)
	m, ok := s.staleManifest(rq, rec)
	if !ok {
		return manifest{}, OutcomeNone, err
	}
	s.log.Warn("serving stale tag: upstream could not revalidate it", "registry", rq.registry, "repo", rq.repo, "tag", rq.ref.tag,
		"digest", rec.Digest, "age_s", s.opts.Now().Sub(rec.CheckedAt).Round(time.Second).Seconds(), "err", err,
		"stale_until", until.Format(time.RFC3339))
	return m, OutcomeStale, nil
}

// confirmTag records that upstream still has the tag where the cache has
// it, when that manifest is still cached (ok).
func (s *Server) confirmTag(rq request, rec cache.TagRecord) (manifest, bool) {
	m, err := s.cachedManifest(rec.Digest)
	if err != nil {
		return manifest{}, false
	}
	s.tagWaits.answered(tagKeyOf(rq), tagResult{m, OutcomeRevalidated})
	rec.CheckedAt = s.opts.Now()
	if err := s.tags.SetTag(rq.registry, rq.repo, rq.ref.tag, rec); err != nil {
		s.log.Warn("recording tag", "tag", rq.ref.tag, "err", err)
	}
	if !s.linked(rq, rec.Digest) { // upstream just showed it in this repository
		if err := s.links.AddLink(rq.registry, rq.repo, rec.Digest); err != nil {
			s.log.Warn("recording repository link", "digest", rec.Digest, "err", err)
		}
	}
	return m, true
}

// fetchTag fetches the manifest rq's tag points to (by want, its digest,
// when upstream said it) and records the tag; rec is what the cache had.
func (s *Server) fetchTag(ctx context.Context, rq request, rec cache.TagRecord, want digest.Digest) (manifest, Outcome, error) {
	ref := rq.ref.tag
	if want != "" {
		ref = want.String()
	}
	m, err := s.fetchManifest(ctx, rq, ref, want)
	if err != nil {
		return manifest{}, OutcomeNone, err
	}
	s.tagWaits.answered(tagKeyOf(rq), tagResult{m, OutcomeMiss})
	s.saveTag(rq, m)
	if rec.Digest != "" && rec.Digest != m.info.Digest {
		s.log.Info("tag moved", "registry", rq.registry, "repo", rq.repo, "tag", rq.ref.tag, "from", rec.Digest, "to", m.info.Digest)
	}
	return m, OutcomeMiss, nil
}

// staleManifest is the cached manifest a tag record points to, when it may
// be served for rq's repository; it counts as a stale answer.
func (s *Server) staleManifest(rq request, rec cache.TagRecord) (manifest, bool) {
	m, err := s.cachedManifest(rec.Digest)
	if err != nil || !s.linked(rq, rec.Digest) {
		return manifest{}, false
	}
	return m, true
}

func (s *Server) saveTag(rq request, m manifest) {
	rec := cache.TagRecord{Digest: m.info.Digest, MediaType: m.info.MediaType, CheckedAt: s.opts.Now()}
	if err := s.tags.SetTag(rq.registry, rq.repo, rq.ref.tag, rec); err != nil {
		s.log.Warn("recording tag", "registry", rq.registry, "repo", rq.repo, "tag", rq.ref.tag, "err", err)
	}
}

// isUpstreamOutage tells errors that mean "upstream cannot answer now"
// (cached content should be served) from answers about the content itself.
func isUpstreamOutage(err error) bool {
	return errors.Is(err, upstream.ErrUnavailable) || errors.Is(err, upstream.ErrRateLimited) ||
		errors.Is(err, context.DeadlineExceeded)
}
