package upstream

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Failover is one registry reached through several sources: its mirrors,
// in order, then its own URL. Each source is a Registry built by New, so
// it has its own credentials, token cache, TLS settings and whatever guard
// New puts on its connections.
//
// A source that fails a request (down, 5xx, timeout, 429, denied, or 404:
// it lacks the content) is skipped for that request and the next one is
// asked. A source that could not answer at all (down, 5xx, timeout, 429) is
// also marked out for OutageBackoff (a 429's Retry-After, if longer, up to
// an hour) and skipped meanwhile; a 404 is not an outage (a mirror such as
// mirror.gcr.io holds only popular images), so it does not mark the source
// out. When every source is marked out, all are tried in order anyway.
//
// Tags are resolved against the first source that answers. Digests may
// come from any source: manifests are checked against their digest by
// GetManifest; a blob is hashed by the caller that stores or passes it on
// (the fill holds back the last byte until then, so no client gets a wrong
// body whole), and a caller that finds a whole body from offset 0 wrong
// calls its Refute: that source is not asked for that digest again for an
// hour, so the next fill uses the next source.
type Failover struct {
	sources []*Registry // mirrors, then the registry's own URL
	labels  []string    // each source's URL, for logs
	o       FailoverOptions
	log     *slog.Logger

	mu       sync.Mutex
	outUntil []time.Time
	bad      map[badSource]time.Time // until when
}

type badSource struct {
	source int
	d      digest.Digest
}

// FailoverOptions configures a Failover. Zero fields take the defaults.
type FailoverOptions struct {
	// OutageBackoff is how long a source that could not answer is skipped
	// (default 30s).
	OutageBackoff time.Duration
	// MirrorTimeout bounds one attempt at a manifest, tag or small request
	// on a source that is not the last, so that a mirror that hangs leaves
	// time for the next (default: half of what is left of the request's
	// deadline, if it has one).
	MirrorTimeout time.Duration
	Logger        *slog.Logger
	// Now is the clock (tests; default the primary's Options.Now).
	Now func() time.Time
}

// badDigestFor is how long a source that served wrong bytes for a digest is
// not asked for that digest again; maxBad caps how many such marks are kept.
const (
	badDigestFor = time.Hour
	maxBad       = 4096
)

// NewFailover returns primary behind its mirrors. Mirrors should share
// primary's Name (so Docker Hub's name defaulting is the same) and carry
// their own credentials, never primary's.
func NewFailover(primary *Registry, mirrors []*Registry, o FailoverOptions) *Failover {
	if o.OutageBackoff <= 0 {
		o.OutageBackoff = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = primary.opts.Now
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &Failover{o: o, log: logger.With("upstream", primary.Name()), bad: map[badSource]time.Time{}}
	for _, m := range mirrors {
		f.sources = append(f.sources, m)
		f.labels = append(f.labels, m.opts.URL)
	}
	f.sources = append(f.sources, primary)
	f.labels = append(f.labels, primary.opts.URL)
	f.outUntil = make([]time.Time, len(f.sources))
	return f
}

// Name is the registry's name as clients use it.
func (f *Failover) Name() string { return f.primary().Name() }

// Repository applies the registry's name defaulting.
func (f *Failover) Repository(repo string) string { return f.primary().Repository(repo) }

func (f *Failover) primary() *Registry { return f.sources[len(f.sources)-1] }

// order is the sources to ask for d ("" for a tag or listing): those not
// marked out and not known to serve d wrong; if that leaves none, every
// source not known bad for d; if none, all.
func (f *Failover) order(d digest.Digest) []int {
	now := f.o.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	var ok, notBad, all []int
	for i := range f.sources {
		all = append(all, i)
		if d != "" {
			if until, isBad := f.bad[badSource{i, d}]; isBad && now.Before(until) {
				continue
			}
		}
		notBad = append(notBad, i)
		if !now.Before(f.outUntil[i]) {
			ok = append(ok, i)
		}
	}
	switch {
	case len(ok) > 0:
		return ok
	case len(notBad) > 0:
		return notBad
	}
	return all
}

// skippable: another source might answer better. Invalid names fail the
// same everywhere; the caller's own cancellation ends the request.
func skippable(ctx context.Context, err error) bool {
	return ctx.Err() == nil && !errors.Is(err, ErrInvalidName)
}

// isOutage: the source could not answer at all, as opposed to answering
// about the content.
func isOutage(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrRateLimited) || errors.Is(err, context.DeadlineExceeded)
}

func (f *Failover) failed(i int, what string, err error) {
	if !isOutage(err) {
		f.log.Info("upstream source lacks the content; trying the next", "source", f.labels[i], "what", what, "err", err)
		return
	}
	backoff := f.o.OutageBackoff
	var rl *RateLimitError
	if errors.As(err, &rl) && rl.RetryAfter > backoff {
		backoff = min(rl.RetryAfter, time.Hour)
	}
	until := f.o.Now().Add(backoff)
	f.mu.Lock()
	if until.After(f.outUntil[i]) {
		f.outUntil[i] = until
	}
	f.mu.Unlock()
	f.log.Warn("upstream source failed; marked out, trying the next", "source", f.labels[i], "what", what,
		"until", until.Format(time.RFC3339), "err", err)
}

func (f *Failover) answered(i int) {
	f.mu.Lock()
	f.outUntil[i] = time.Time{}
	f.mu.Unlock()
}

// markBad records that source i served content that is not d.
func (f *Failover) markBad(i int, d digest.Digest) {
	now := f.o.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bad) >= maxBad {
		for k, until := range f.bad {
			if !now.Before(until) || len(f.bad) >= maxBad {
				delete(f.bad, k)
			}
		}
	}
	f.bad[badSource{i, d}] = now.Add(badDigestFor)
}

// each runs op against the sources in order until one succeeds, and
// returns the index of that source, or the last error. With small set,
// op's whole answer is read within the call, so a source that is not the
// last gets a share of the deadline (see MirrorTimeout).
func (f *Failover) each(ctx context.Context, what string, d digest.Digest, small bool, op func(ctx context.Context, r *Registry) error) (int, error) {
	order := f.order(d)
	var last error
	for n, i := range order {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if small && n < len(order)-1 {
			actx, cancel = f.attemptContext(ctx)
		}
		err := op(actx, f.sources[i])
		cancel()
		if err == nil {
			f.answered(i)
			return i, nil
		}
		last = err
		if !skippable(ctx, err) {
			return i, err
		}
		f.failed(i, what, err)
	}
	return -1, last
}

func (f *Failover) attemptContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if f.o.MirrorTimeout > 0 {
		return context.WithTimeout(ctx, f.o.MirrorTimeout)
	}
	if dl, ok := ctx.Deadline(); ok {
		return context.WithTimeout(ctx, time.Until(dl)/2)
	}
	return ctx, func() {}
}

// HeadManifest asks each source in turn; the first answer wins.
func (f *Failover) HeadManifest(ctx context.Context, repo, ref string) (Descriptor, error) {
	var desc Descriptor
	_, err := f.each(ctx, "HEAD manifest "+repo+":"+ref, DigestRef(ref), true, func(ctx context.Context, r *Registry) error {
		var err error
		desc, err = r.HeadManifest(ctx, repo, ref)
		return err
	})
	return desc, err
}

// GetManifest asks each source in turn; a manifest by digest is verified
// by Registry.GetManifest, so a wrong one moves on to the next source.
func (f *Failover) GetManifest(ctx context.Context, repo, ref string) ([]byte, Descriptor, error) {
	var body []byte
	var desc Descriptor
	_, err := f.each(ctx, "GET manifest "+repo+":"+ref, DigestRef(ref), true, func(ctx context.Context, r *Registry) error {
		var err error
		body, desc, err = r.GetManifest(ctx, repo, ref)
		return err
	})
	return body, desc, err
}

// HeadBlob asks each source in turn.
func (f *Failover) HeadBlob(ctx context.Context, repo string, d digest.Digest) (int64, error) {
	var size int64
	_, err := f.each(ctx, "HEAD blob "+repo+"@"+d.String(), d, true, func(ctx context.Context, r *Registry) error {
		var err error
		size, err = r.HeadBlob(ctx, repo, d)
		return err
	})
	return size, err
}

// ListTags asks each source in turn.
func (f *Failover) ListTags(ctx context.Context, repo, rawQuery string) (TagPage, error) {
	var page TagPage
	_, err := f.each(ctx, "GET tags of "+repo, "", true, func(ctx context.Context, r *Registry) error {
		var err error
		page, err = r.ListTags(ctx, repo, rawQuery)
		return err
	})
	return page, err
}

// Referrers asks each source in turn.
func (f *Failover) Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]byte, Descriptor, error) {
	var body []byte
	var desc Descriptor
	_, err := f.each(ctx, "GET referrers of "+repo+"@"+d.String(), "", true, func(ctx context.Context, r *Registry) error {
		var err error
		body, desc, err = r.Referrers(ctx, repo, d, artifactType)
		return err
	})
	return body, desc, err
}

// GetBlob starts the download from the first source that answers. A body
// from offset 0 carries Refute: a caller that finds the whole is not d
// marks that source bad for d (it is asked last, or not at all, for a
// while). A resume (offset > 0) can name no culprit: its bytes may have
// come from several sources.
func (f *Failover) GetBlob(ctx context.Context, repo string, d digest.Digest, offset int64) (*Blob, error) {
	var blob *Blob
	i, err := f.each(ctx, "GET blob "+repo+"@"+d.String(), d, false, func(ctx context.Context, r *Registry) error {
		var err error
		blob, err = r.GetBlob(ctx, repo, d, offset)
		return err
	})
	if err != nil {
		return nil, err
	}
	if blob.Offset == 0 {
		blob.Refute = func() {
			f.markBad(i, d)
			f.log.Warn("upstream source served content that does not match its digest; not asked for it again",
				"source", f.labels[i], "digest", d, "for_s", badDigestFor.Seconds())
		}
	}
	return blob, nil
}

// SourceState is one source of a Failover as a status page shows it.
type SourceState struct {
	URL string
	// Mirror is false for the registry's own URL (the last source).
	Mirror bool
	// OutUntil is when a source marked out is asked again (zero: not out).
	OutUntil time.Time
}

// Sources reports every source, in the order they are tried.
func (f *Failover) Sources() []SourceState {
	now := f.o.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]SourceState, len(f.sources))
	for i := range f.sources {
		out[i] = SourceState{URL: f.labels[i], Mirror: i < len(f.sources)-1}
		if now.Before(f.outUntil[i]) {
			out[i].OutUntil = f.outUntil[i]
		}
	}
	return out
}
