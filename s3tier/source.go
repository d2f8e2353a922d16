package s3tier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/upstream"
)

// Upstream is one registry as the proxy reaches it (the proxy's own
// Upstream interface has the same methods): Source is one, and wraps one.
type Upstream interface {
	Name() string
	Repository(name string) string
	HeadManifest(ctx context.Context, repo, ref string) (upstream.Descriptor, error)
	GetManifest(ctx context.Context, repo, ref string) ([]byte, upstream.Descriptor, error)
	HeadBlob(ctx context.Context, repo string, d digest.Digest) (int64, error)
	GetBlob(ctx context.Context, repo string, d digest.Digest, offset int64) (*upstream.Blob, error)
	ListTags(ctx context.Context, repo, rawQuery string) (upstream.TagPage, error)
}

// Source reads through L2 in front of next (the owner peer or upstream);
// see the package documentation for the order of sources.
type Source struct {
	t    *Tier
	next Upstream
}

var _ Upstream = (*Source)(nil)

// Wrap puts L2 in front of next. The result keeps next's optional
// capabilities the proxy looks for (Referrers, Stats, Sources).
func (t *Tier) Wrap(next Upstream) Upstream {
	s := &Source{t: t, next: next}
	if _, ok := next.(sourcesLister); ok {
		return &sourceWithSources{s}
	}
	return s
}

type sourcesLister interface {
	Sources() []upstream.SourceState
}

type sourceWithSources struct{ *Source }

// Sources is next's (a Failover's mirrors).
func (s *sourceWithSources) Sources() []upstream.SourceState {
	return s.next.(sourcesLister).Sources()
}

// Referrers is next's: referrers lists are not kept in L2.
func (s *Source) Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]byte, upstream.Descriptor, error) {
	r, ok := s.next.(interface {
		Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]byte, upstream.Descriptor, error)
	})
	if !ok {
		return nil, upstream.Descriptor{}, fmt.Errorf("%w: referrers of %s", upstream.ErrNotFound, repo)
	}
	return r.Referrers(ctx, repo, d, artifactType)
}

// Stats is next's figures (the registry's own).
func (s *Source) Stats() upstream.Stats {
	if st, ok := s.next.(interface{ Stats() upstream.Stats }); ok {
		return st.Stats()
	}
	return upstream.Stats{}
}

// Name is next's.
func (s *Source) Name() string { return s.next.Name() }

// Repository is next's.
func (s *Source) Repository(name string) string { return s.next.Repository(name) }

// ListTags is next's: tag lists are not kept in L2.
func (s *Source) ListTags(ctx context.Context, repo, rawQuery string) (upstream.TagPage, error) {
	return s.next.ListTags(ctx, repo, rawQuery)
}

// maxManifest caps a manifest read from L2 into memory.
const maxManifest = 4 << 20

// tagRecord is a tag's record in L2.
type tagRecord struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
	CheckedAt time.Time     `json:"checkedAt"`
}

// statBlob asks L2 for d's object: size and media type, found or not.
func (t *Tier) statBlob(ctx context.Context, d digest.Digest) (minio.ObjectInfo, bool) {
	if !usableDigest(d) || !t.usable() {
		return minio.ObjectInfo{}, false
	}
	ctx, cancel := t.smallContext(ctx)
	defer cancel()
	info, err := t.client.StatObject(ctx, t.o.Bucket, t.blobKey(d), minio.StatObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			t.answered()
			t.stats.misses.Add(1)
			t.forget(d) // deleted (gc, lifecycle): upload it again when committed
			return info, false
		}
		t.failed("HEAD "+d.String(), err)
		return info, false
	}
	t.answered()
	return info, true
}

// getManifest reads manifest d from L2 and checks it is d.
func (t *Tier) getManifest(ctx context.Context, d digest.Digest) ([]byte, upstream.Descriptor, bool) {
	if !usableDigest(d) || !t.usable() {
		return nil, upstream.Descriptor{}, false
	}
	ctx, cancel := t.smallContext(ctx)
	defer cancel()
	body, info, _, err := t.core.GetObject(ctx, t.o.Bucket, t.blobKey(d), minio.GetObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			t.answered()
			t.stats.misses.Add(1)
			t.forget(d)
		} else {
			t.failed("GET manifest "+d.String(), err)
		}
		return nil, upstream.Descriptor{}, false
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, maxManifest+1))
	if err != nil {
		t.failed("GET manifest "+d.String(), err)
		return nil, upstream.Descriptor{}, false
	}
	t.answered()
	if int64(len(data)) > maxManifest || digest.FromBytes(data) != d {
		t.corruptObject(d)
		return nil, upstream.Descriptor{}, false
	}
	t.stats.hits.Add(1)
	t.stats.hitBytes.Add(int64(len(data)))
	t.remember(d)
	return data, upstream.Descriptor{Digest: d, MediaType: mediaTypeOf(info), Size: int64(len(data))}, true
}

// corruptObject deletes d's object, which does not hold d.
func (t *Tier) corruptObject(d digest.Digest) {
	t.stats.corrupt.Add(1)
	t.forget(d)
	ctx, cancel := context.WithTimeout(context.Background(), t.o.Timeout)
	defer cancel()
	err := t.client.RemoveObject(ctx, t.o.Bucket, t.blobKey(d), minio.RemoveObjectOptions{})
	t.log.Warn("s3 object does not match its digest: deleted", "digest", d, "delete_err", err)
}

// getTag reads a tag's record.
func (t *Tier) getTag(ctx context.Context, registry, repo, tag string) (tagRecord, bool) {
	var rec tagRecord
	if !t.usable() {
		return rec, false
	}
	ctx, cancel := t.smallContext(ctx)
	defer cancel()
	body, _, _, err := t.core.GetObject(ctx, t.o.Bucket, t.tagKey(registry, repo, tag), minio.GetObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			t.answered()
		} else {
			t.failed("GET tag "+repo+":"+tag, err)
		}
		return rec, false
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, 64<<10))
	if err != nil {
		t.failed("GET tag "+repo+":"+tag, err)
		return rec, false
	}
	t.answered()
	if json.Unmarshal(data, &rec) != nil || !usableDigest(rec.Digest) {
		t.log.Warn("ignoring an unreadable s3 tag record", "registry", registry, "repo", repo, "tag", tag)
		return tagRecord{}, false
	}
	return rec, true
}

func (t *Tier) fresh(rec tagRecord) bool {
	return t.o.Now().Sub(rec.CheckedAt) < t.o.TagTTL
}

// isOutageErr: the next source could not answer (so an old record is
// better than nothing), as opposed to answering that the tag is unknown.
func isOutageErr(err error) bool {
	return errors.Is(err, upstream.ErrUnavailable) || errors.Is(err, upstream.ErrRateLimited) ||
		errors.Is(err, context.DeadlineExceeded)
}

// HeadManifest answers a digest from L2 (else next); a tag from a fresh
// record, else from next (recording its answer), else, next being down,
// from the record whatever its age.
func (s *Source) HeadManifest(ctx context.Context, repo, ref string) (upstream.Descriptor, error) {
	if d := upstream.DigestRef(ref); d != "" {
		if info, ok := s.t.statBlob(ctx, d); ok {
			return upstream.Descriptor{Digest: d, MediaType: mediaTypeOf(info), Size: info.Size}, nil
		}
		return s.next.HeadManifest(ctx, repo, ref)
	}
	rec, haveRec := s.t.getTag(ctx, s.Name(), repo, ref)
	if haveRec && s.t.fresh(rec) {
		s.t.stats.tagHits.Add(1)
		return upstream.Descriptor{Digest: rec.Digest, MediaType: rec.MediaType, Size: rec.Size}, nil
	}
	desc, err := s.next.HeadManifest(ctx, repo, ref)
	if err == nil {
		if usableDigest(desc.Digest) {
			s.t.recordTag(s.Name(), repo, ref, tagRecord{Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size, CheckedAt: s.t.o.Now()})
		}
		return desc, nil
	}
	if haveRec && isOutageErr(err) {
		s.t.stats.staleTags.Add(1)
		s.t.log.Info("upstream down: answering a tag from its s3 record", "registry", s.Name(), "repo", repo, "tag", ref, "checked_at", rec.CheckedAt, "err", err)
		return upstream.Descriptor{Digest: rec.Digest, MediaType: rec.MediaType, Size: rec.Size}, nil
	}
	return desc, err
}

// GetManifest is HeadManifest with the body: a manifest by digest, or the
// one a fresh (or, next being down, any) tag record names, comes from L2.
func (s *Source) GetManifest(ctx context.Context, repo, ref string) ([]byte, upstream.Descriptor, error) {
	if d := upstream.DigestRef(ref); d != "" {
		if body, desc, ok := s.t.getManifest(ctx, d); ok {
			return body, desc, nil
		}
		return s.next.GetManifest(ctx, repo, ref)
	}
	rec, haveRec := s.t.getTag(ctx, s.Name(), repo, ref)
	if haveRec && s.t.fresh(rec) {
		if body, desc, ok := s.t.getManifest(ctx, rec.Digest); ok {
			s.t.stats.tagHits.Add(1)
			if desc.MediaType == "" || desc.MediaType == "application/octet-stream" {
				desc.MediaType = rec.MediaType
			}
			return body, desc, nil
		}
	}
	body, desc, err := s.next.GetManifest(ctx, repo, ref)
	if err == nil {
		d := digest.FromBytes(body)
		mt := desc.MediaType
		if mt == "" {
			mt = manifestMediaType(body)
		}
		s.t.recordTag(s.Name(), repo, ref, tagRecord{Digest: d, MediaType: mt, Size: int64(len(body)), CheckedAt: s.t.o.Now()})
		return body, desc, nil
	}
	if haveRec && isOutageErr(err) {
		if body, desc, ok := s.t.getManifest(ctx, rec.Digest); ok {
			s.t.stats.staleTags.Add(1)
			s.t.log.Info("upstream down: answering a tag from its s3 record", "registry", s.Name(), "repo", repo, "tag", ref, "checked_at", rec.CheckedAt, "err", err)
			if desc.MediaType == "" || desc.MediaType == "application/octet-stream" {
				desc.MediaType = rec.MediaType
			}
			return body, desc, nil
		}
	}
	return nil, desc, err
}

func manifestMediaType(body []byte) string {
	var probe struct {
		MediaType string `json:"mediaType"`
	}
	_ = json.Unmarshal(body, &probe)
	return probe.MediaType
}

// HeadBlob answers from L2 when it has d, else from next.
func (s *Source) HeadBlob(ctx context.Context, repo string, d digest.Digest) (int64, error) {
	if info, ok := s.t.statBlob(ctx, d); ok {
		return info.Size, nil
	}
	return s.next.HeadBlob(ctx, repo, d)
}

// GetBlob reads d from L2 from offset on (a ranged GET for a resume), else
// from next. A body from offset 0 carries Refute: the caller that finds
// the whole is not d (its own check, before it stores anything) has the
// object deleted, so the next download goes to next.
func (s *Source) GetBlob(ctx context.Context, repo string, d digest.Digest, offset int64) (*upstream.Blob, error) {
	if blob, ok := s.t.getBlob(ctx, d, offset); ok {
		return blob, nil
	}
	return s.next.GetBlob(ctx, repo, d, offset)
}

func (t *Tier) getBlob(ctx context.Context, d digest.Digest, offset int64) (*upstream.Blob, bool) {
	if !usableDigest(d) || !t.usable() {
		return nil, false
	}
	var opts minio.GetObjectOptions
	if offset > 0 {
		if err := opts.SetRange(offset, 0); err != nil {
			return nil, false
		}
	}
	// The request has a context of its own, which the body's stall guard
	// cancels: a store that stops sending must not hold the fill (and every
	// client of d) until the fill's own deadline.
	rctx, cancel := context.WithCancelCause(ctx)
	body, info, hdr, err := t.core.GetObject(rctx, t.o.Bucket, t.blobKey(d), opts)
	if err != nil {
		cancel(nil)
		r := minio.ToErrorResponse(err)
		switch {
		case isNotFound(err):
			t.answered()
			t.stats.misses.Add(1)
			t.forget(d)
		case r.StatusCode == http.StatusRequestedRangeNotSatisfiable:
			t.answered()
		default:
			t.failed("GET blob "+d.String(), err)
		}
		return nil, false
	}
	t.answered()
	size := info.Size
	start := int64(0)
	if offset > 0 {
		var ok bool
		if start, size, ok = upstream.ParseContentRange(hdr.Get("Content-Range")); !ok || size < 0 {
			if info.Size >= 0 && hdr.Get("Content-Range") == "" {
				start, size = 0, info.Size // the whole object: the range was ignored
			} else {
				body.Close()
				cancel(nil)
				return nil, false
			}
		}
	}
	t.stats.hits.Add(1)
	t.remember(d)
	blob := &upstream.Blob{Body: t.guard(rctx, cancel, body, d), Offset: start, Size: size, Tier: "s3"}
	if start == 0 {
		blob.Refute = func() { t.corruptObject(d) }
	}
	return blob, true
}

// errStalled: an L2 body sent nothing for StallTimeout.
var errStalled = errors.New("s3 body stalled")

// guard wraps an L2 body (ctx and cancel are its request's) so that a Read
// waiting StallTimeout for the store cancels the request, and a stalled or
// cut body fails with ErrUnavailable: the fill resumes from the next
// source. Close cancels.
func (t *Tier) guard(ctx context.Context, cancel context.CancelCauseFunc, body io.ReadCloser, d digest.Digest) io.ReadCloser {
	g := &guardedBody{t: t, d: d, ctx: ctx, cancel: cancel, body: body}
	g.stall = time.AfterFunc(time.Hour, func() { cancel(errStalled) })
	g.stall.Stop() // armed only while a Read waits on the store
	return g
}

type guardedBody struct {
	t      *Tier
	d      digest.Digest
	ctx    context.Context
	cancel context.CancelCauseFunc
	body   io.ReadCloser
	stall  *time.Timer
	once   sync.Once
}

func (g *guardedBody) Read(p []byte) (int, error) {
	// The stall clock runs only while this Read waits on the store: time
	// the reader spends elsewhere (a slow disk, a full pass-through
	// window) is not the store's.
	g.stall.Reset(g.t.o.StallTimeout)
	n, err := g.body.Read(p)
	g.stall.Stop()
	g.t.stats.hitBytes.Add(int64(n))
	if err == nil || err == io.EOF {
		return n, err
	}
	switch cause := context.Cause(g.ctx); {
	case errors.Is(cause, errStalled):
		err = fmt.Errorf("%w: s3 blob %s: no data for %v", upstream.ErrUnavailable, g.d, g.t.o.StallTimeout)
		g.t.failed("GET blob "+g.d.String(), err) // a hung store: skip it for a while
		return n, err
	case cause != nil:
		return n, err // the caller gave up, or closed the body
	}
	return n, fmt.Errorf("%w: s3 blob %s: %w", upstream.ErrUnavailable, g.d, err)
}

func (g *guardedBody) Close() error {
	var err error
	g.once.Do(func() {
		g.stall.Stop()
		err = g.body.Close()
		g.cancel(nil)
	})
	return err
}

// BlobRedirect returns a presigned URL for d when redirects are on, d is
// in L2 and at least RedirectMinSize long; the proxy asks it for blobs it
// does not hold (and answers 307).
func (s *Source) BlobRedirect(ctx context.Context, repo string, d digest.Digest) (string, bool) {
	t := s.t
	if !t.o.Redirect {
		return "", false
	}
	info, ok := t.statBlob(ctx, d)
	if !ok || info.Size < t.o.RedirectMinSize {
		return "", false
	}
	u, err := t.client.PresignedGetObject(ctx, t.o.Bucket, t.blobKey(d), t.o.RedirectExpiry, nil)
	if err != nil {
		t.log.Warn("presigning an s3 URL", "digest", d, "err", err)
		return "", false
	}
	t.stats.redirects.Add(1)
	return u.String(), true
}
