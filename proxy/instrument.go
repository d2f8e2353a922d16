package proxy

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/upstream"
)

// meteredUpstream counts and times every call to one upstream — for the
// metrics and the status page — in one place instead of at each call site.
// A blob body is counted as it is read.
type meteredUpstream struct {
	Upstream
	s    *Server
	name string
}

// meteredReferrers is a meteredUpstream whose upstream serves referrers;
// the optional interface stays visible to type assertions.
type meteredReferrers struct {
	*meteredUpstream
	inner referrersUpstream
}

// meter wraps up.
func (s *Server) meter(up Upstream) Upstream {
	m := &meteredUpstream{Upstream: up, s: s, name: up.Name()}
	if ru, ok := up.(referrersUpstream); ok {
		return &meteredReferrers{meteredUpstream: m, inner: ru}
	}
	return m
}

// done records one upstream call of kind that received bytes of body.
func (u *meteredUpstream) done(kind string, start time.Time, bytes int64, err error) {
	m := u.s.metrics
	m.upstream.WithLabelValues(kind, resultLabel(err), u.name).Inc()
	m.upstreamDuration.WithLabelValues(kind, u.name).Observe(time.Since(start).Seconds())
	if bytes > 0 {
		m.upstreamBytes.WithLabelValues(u.name).Add(float64(bytes))
	}
	u.s.status.Upstream(u.name, bytes, err != nil && !errors.Is(err, upstream.ErrNotFound))
}

func (u *meteredUpstream) HeadManifest(ctx context.Context, repo, ref string) (upstream.Descriptor, error) {
	start := time.Now()
	desc, err := u.Upstream.HeadManifest(ctx, repo, ref)
	u.done("manifest_head", start, 0, err)
	return desc, err
}

func (u *meteredUpstream) GetManifest(ctx context.Context, repo, ref string) ([]byte, upstream.Descriptor, error) {
	start := time.Now()
	body, desc, err := u.Upstream.GetManifest(ctx, repo, ref)
	u.done("manifest", start, int64(len(body)), err)
	return body, desc, err
}

func (u *meteredUpstream) HeadBlob(ctx context.Context, repo string, d digest.Digest) (int64, error) {
	start := time.Now()
	n, err := u.Upstream.HeadBlob(ctx, repo, d)
	u.done("blob_head", start, 0, err)
	return n, err
}

func (u *meteredUpstream) GetBlob(ctx context.Context, repo string, d digest.Digest, offset int64) (*upstream.Blob, error) {
	start := time.Now()
	b, err := u.Upstream.GetBlob(ctx, repo, d, offset)
	if err == nil && b.Tier != "" {
		return b, nil // a shared tier's body, counted by the tier: no upstream traffic
	}
	u.done("blob", start, 0, err)
	if err == nil {
		b.Body = &countingBody{ReadCloser: b.Body, u: u}
	}
	return b, err
}

func (u *meteredUpstream) ListTags(ctx context.Context, repo, rawQuery string) (upstream.TagPage, error) {
	start := time.Now()
	page, err := u.Upstream.ListTags(ctx, repo, rawQuery)
	u.done("tags", start, int64(len(page.Body)), err)
	return page, err
}

func (u *meteredReferrers) Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]byte, upstream.Descriptor, error) {
	start := time.Now()
	body, desc, err := u.inner.Referrers(ctx, repo, d, artifactType)
	u.done("referrers", start, int64(len(body)), err)
	return body, desc, err
}

// countingBody counts a blob body's bytes as the fill reads them, in
// batches so that a 64 KiB read costs no lock.
type countingBody struct {
	io.ReadCloser
	u       *meteredUpstream
	pending int64
}

// countBatch is how many bytes a countingBody gathers before it reports.
const countBatch = 1 << 20

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.pending += int64(n)
	if c.pending >= countBatch || (err != nil && c.pending > 0) {
		c.flush()
	}
	return n, err
}

func (c *countingBody) flush() {
	c.u.s.metrics.upstreamBytes.WithLabelValues(c.u.name).Add(float64(c.pending))
	c.u.s.status.UpstreamBytes(c.u.name, c.pending)
	c.pending = 0
}

func (c *countingBody) Close() error {
	if c.pending > 0 {
		c.flush()
	}
	return c.ReadCloser.Close()
}
