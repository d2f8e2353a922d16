package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/imageref"
	"github.com/regmirror/regmirror/upstream"
)

// Upstream is what the peer source decorates: one registry's client, with
// the method set the proxy asks of it.
type Upstream interface {
	Name() string
	Repository(name string) string
	HeadManifest(ctx context.Context, repo, ref string) (upstream.Descriptor, error)
	GetManifest(ctx context.Context, repo, ref string) ([]byte, upstream.Descriptor, error)
	HeadBlob(ctx context.Context, repo string, d digest.Digest) (int64, error)
	GetBlob(ctx context.Context, repo string, d digest.Digest, offset int64) (*upstream.Blob, error)
	ListTags(ctx context.Context, repo, rawQuery string) (upstream.TagPage, error)
}

// The optional methods a decorated upstream keeps (the proxy finds them by
// type assertion).
type (
	referrers interface {
		Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]byte, upstream.Descriptor, error)
	}
	stats   interface{ Stats() upstream.Stats }
	sources interface{ Sources() []upstream.SourceState }
)

// Wrap returns up with the owner peer in front of it for blob downloads:
// GetBlob asks the digest's owner when that is another node, and up
// otherwise or when the owner does not answer. Everything else is up's.
func (n *Node) Wrap(up Upstream) Upstream {
	s := &source{Upstream: up, n: n}
	if r, ok := up.(referrers); ok {
		return &referrerSource{source: s, r: r}
	}
	return s
}

type source struct {
	Upstream
	n *Node
}

type referrerSource struct {
	*source
	r referrers
}

func (s *referrerSource) Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]byte, upstream.Descriptor, error) {
	return s.r.Referrers(ctx, repo, d, artifactType)
}

// Stats is the inner upstream's.
func (s *source) Stats() upstream.Stats {
	if st, ok := s.Upstream.(stats); ok {
		return st.Stats()
	}
	return upstream.Stats{}
}

// Sources is the inner upstream's (nil when it has a single source).
func (s *source) Sources() []upstream.SourceState {
	if so, ok := s.Upstream.(sources); ok {
		return so.Sources()
	}
	return nil
}

// GetBlob asks d's owner when that is another node; if it does not answer,
// the node's own sources.
func (s *source) GetBlob(ctx context.Context, repo string, d digest.Digest, offset int64) (*upstream.Blob, error) {
	if owner := s.n.forwardTo(d); owner != "" {
		blob, err := s.n.fetch(ctx, owner, s.Name(), repo, d, offset)
		if err == nil {
			s.n.forwarded.Add(1)
			return blob, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: GET blob %s from peer %s: %w", upstream.ErrUnavailable, d, owner, ctx.Err())
		}
		s.n.fallbacks.Add(1)
		s.n.log.Warn("owner did not answer: downloading from this node's own sources", "peer", owner, "digest", d, "offset", offset, "err", err)
	}
	return s.Upstream.GetBlob(ctx, repo, d, offset)
}

// fetch starts a blob download from peer, as a signed GET of the peer's
// own /v2/ endpoint (the registry named by ?ns=). Any answer but the
// expected 200 or 206 is an error, and so is a connection error; a 5xx or
// a connection error marks the peer down.
func (n *Node) fetch(ctx context.Context, peer, registry, repo string, d digest.Digest, offset int64) (*upstream.Blob, error) {
	uri := "/v2/" + peerPath(registry, repo) + "/blobs/" + d.String() + "?ns=" + url.QueryEscape(registry)
	fctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(fctx, http.MethodGet, peer+uri, nil)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	req.Header.Set(Header, n.signer.sign(http.MethodGet, uri))
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	f := &forward{peer: peer, cancel: cancel}
	n.track(d, f)
	fail := func(err error, down bool) (*upstream.Blob, error) {
		n.untrack(d, f)
		cancel(nil)
		if down {
			n.markDown(peer, err)
		}
		return nil, err
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return fail(err, ctx.Err() == nil && !cutHere(context.Cause(fctx)))
	}
	b := &upstream.Blob{Size: -1, Tier: "peer"}
	switch resp.StatusCode {
	case http.StatusOK:
		b.Size = resp.ContentLength
		if b.Size < 0 {
			b.Size = -1
		}
	case http.StatusPartialContent:
		start, total, ok := upstream.ParseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			resp.Body.Close()
			return fail(fmt.Errorf("peer %s: asked for bytes %d-, got Content-Range %q", peer, offset, resp.Header.Get("Content-Range")), false)
		}
		b.Offset, b.Size = start, total
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		// The owner failing because its upstream did is no sign of it
		// being down: this request falls back, the owner keeps its digests.
		down := (resp.StatusCode >= 500 && resp.Header.Get(UpstreamFailedHeader) == "") || resp.StatusCode == http.StatusUnauthorized
		return fail(fmt.Errorf("peer %s answered %s", peer, resp.Status), down)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != d.String() {
		resp.Body.Close()
		return fail(fmt.Errorf("peer %s answered digest %s for %s", peer, got, d), true)
	}
	stall := time.AfterFunc(time.Hour, func() { cancel(errPeerStalled) })
	stall.Stop() // armed only while a Read waits on the owner
	b.Body = &peerBody{n: n, peer: peer, d: d, f: f, ctx: fctx, body: resp.Body, stall: stall}
	if offset == 0 {
		// The owner's copy is damaged (a disk flipped a bit): this node
		// fetches d from its own sources for a while, instead of getting
		// the same wrong bytes from the owner on every try.
		b.Refute = func() {
			n.log.Warn("peer sent a blob that is not its digest; fetching it from this node's own sources", "peer", peer, "digest", d)
			n.fillHere(d, errOwnerCorrupt)
		}
	}
	return b, nil
}

// cutHere reports whether a forward was cut by this node for a reason of
// its own (a peer asked for the digest, the owner was already marked down,
// its copy of the digest was refuted), not because the owner failed.
func cutHere(cause error) bool {
	return errors.Is(cause, errAskedByPeer) || errors.Is(cause, errPeerDown) || errors.Is(cause, errOwnerCorrupt)
}

// peerBody is an owner's stream. A read error (the owner died, or cut the
// body because its fill failed), a body that sends nothing for
// StallTimeout, or the owner marked down meanwhile is ErrUnavailable, so
// the fill resumes, from the next owner or this node's own sources; the
// first two mark the owner down.
type peerBody struct {
	n      *Node
	peer   string
	d      digest.Digest
	f      *forward
	ctx    context.Context
	body   io.ReadCloser
	stall  *time.Timer // cuts the forward when the body sends nothing
	closed bool
}

func (b *peerBody) Read(p []byte) (int, error) {
	// The stall clock runs only while this Read waits on the owner: time
	// the reader spends elsewhere (a slow disk, a full pass-through
	// window) is not the owner's.
	b.stall.Reset(b.n.o.StallTimeout)
	n, err := b.body.Read(p)
	b.stall.Stop()
	if err == nil || err == io.EOF {
		return n, err
	}
	switch cause := context.Cause(b.ctx); {
	case errors.Is(cause, errAskedByPeer):
		return n, fmt.Errorf("%w: %w", upstream.ErrUnavailable, errAskedByPeer)
	case errors.Is(cause, errPeerStalled):
		b.n.fallbacks.Add(1)
		b.n.markDown(b.peer, cause)
		err = cause
	case cutHere(cause):
		// Already marked down, or refuted for this digest only: marking it
		// down again could take out an owner a ping has just brought back.
		b.n.fallbacks.Add(1)
		err = cause
	case b.ctx.Err() == nil:
		b.n.fallbacks.Add(1)
		b.n.markDown(b.peer, err)
	}
	return n, fmt.Errorf("%w: blob %s from peer %s: %w", upstream.ErrUnavailable, b.d, b.peer, err)
}

func (b *peerBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	b.stall.Stop()
	b.n.untrack(b.d, b.f)
	err := b.body.Close()
	b.f.cancel(nil)
	return err
}

// peerPath is repo as a peer's /v2/ path names it with ?ns=registry. A
// peer takes a first component that names the ?ns= registry for a path
// prefix (containerd's override_path sends both), so a repository that
// itself begins so ("corp.example/team" on corp.example) goes behind one:
// else the owner would fetch, and serve, another repository ("team").
func peerPath(registry, repo string) string {
	first, _, ok := strings.Cut(repo, "/")
	if ok && imageref.IsHost(first) && imageref.CanonicalRegistry(first) == imageref.CanonicalRegistry(registry) {
		return registry + "/" + repo
	}
	return repo
}
