package airgap

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dustin/go-humanize"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/archive"
	"github.com/regmirror/regmirror/imageref"
	"github.com/regmirror/regmirror/proxy"
	"github.com/regmirror/regmirror/upstream"
)

// Parallel is how many blobs of one image are read at once.
const Parallel = 4

// Mirror is a regmirror to pull through.
type Mirror struct {
	// URL is the server's base: "http://127.0.0.1:5000",
	// "https://mirror.corp:5000".
	URL string
	// Transport carries the requests, with the TLS settings and
	// credentials they need (package main's target.PullTransport). Nil: a
	// clone of http.DefaultTransport.
	Transport http.RoundTripper
	// DefaultRegistry is the registry the mirror serves under bare
	// /v2/<repo>/ paths (as the Docker daemon asks); images of other
	// registries are asked with the registry as a path prefix
	// (/v2/ghcr.io/org/app/...), which the proxy routes.
	DefaultRegistry string
}

// Pinner pins and unpins images on the mirror; admin.Ops has both.
type Pinner interface {
	Pin(ctx context.Context, name string, digests []digest.Digest) error
	Unpin(ctx context.Context, name string) error
}

// Puller reads image graphs through a mirror with upstream's registry
// client, which the mirror answers as a registry. It is safe for
// concurrent use.
type Puller struct {
	reg             *upstream.Registry
	defaultRegistry string
	transport       http.RoundTripper
}

// everywhere lets the client follow the mirror wherever it sends it
// (a redirect to a blob store on the LAN): the mirror is trusted.
var everywhere = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// NewPuller returns a Puller for m. It does no network I/O.
func NewPuller(m Mirror) (*Puller, error) {
	u, err := upstream.CheckBaseURL(m.URL)
	if err != nil {
		return nil, fmt.Errorf("mirror: %w", err)
	}
	rt := m.Transport
	if rt == nil {
		rt = http.DefaultTransport.(*http.Transport).Clone()
	}
	reg, err := upstream.New(upstream.Options{
		Name:                  u.Host,
		URL:                   u.Scheme + "://" + u.Host,
		Transport:             &observer{next: rt},
		AllowPrivateAddresses: everywhere,
	})
	if err != nil {
		return nil, err
	}
	return &Puller{reg: reg, defaultRegistry: m.DefaultRegistry, transport: rt}, nil
}

// Close drops idle connections (the mirror may be shutting down next).
func (p *Puller) Close() {
	if t, ok := p.transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// PullOptions says what of an image to read.
type PullOptions struct {
	// Platforms of a multi-platform image to read; nil: every platform.
	Platforms []v1.Platform
	// Pin, when set, is called with the digests known so far before each
	// manifest's blobs are fetched, so that eviction cannot take them
	// between their fill and the image's final pin.
	Pin func(ctx context.Context, digests []digest.Digest) error
	// Bar, when set, counts the image's bytes (and Total all images').
	Bar, Total Bar
}

// Pulled is what a pull read.
type Pulled struct {
	// Root is the digest of the top-level manifest or index.
	Root digest.Digest
	// Digests is the image's graph as read: every manifest, config and
	// layer (the cosign tags' and the referrers' graphs included). After
	// an error, what was found before it.
	Digests []digest.Digest
	// Fetched counts the manifests and blobs the mirror fetched from
	// upstream for this pull, FetchedBytes their bytes; CachedBytes is
	// what it already held.
	Fetched, FetchedBytes, CachedBytes int64
}

// Pull reads ref's graph through the mirror: the top-level manifest or
// index; of an index, the child manifests of the chosen platforms; of
// every manifest, its config and layers (non-distributable layers the
// registry does not serve are skipped); then the cosign tags
// sha256-<hex>.sig and .att of the top-level digest, and the referrers of
// the top-level digest, each with its whole graph, when they exist.
// A blob the mirror already holds is not read again.
func (p *Puller) Pull(ctx context.Context, ref imageref.Ref, o PullOptions) (Pulled, error) {
	tr := &tracker{bar: o.Bar, total: o.Total}
	if tr.bar == nil {
		tr.bar = noBar{}
	}
	if tr.total == nil {
		tr.total = noBar{}
	}
	g := &graph{p: p, tr: tr, pin: o.Pin, seen: map[digest.Digest]bool{}}
	root, err := g.pull(context.WithValue(ctx, trackerKey{}, tr), ref, o.Platforms)
	return Pulled{Root: root, Digests: g.known(), Fetched: tr.blobs.Load(), FetchedBytes: tr.fetched.Load(), CachedBytes: tr.cached.Load()}, err
}

// repository names ref's repository on the mirror.
func (p *Puller) repository(ref imageref.Ref) string {
	if ref.Registry == p.defaultRegistry {
		return ref.Repo
	}
	return ref.Registry + "/" + ref.Repo
}

// PreloadOptions is one preload run.
type PreloadOptions struct {
	Refs      []imageref.Ref
	Platforms []v1.Platform // nil: every platform
	// Pins pins each image on the mirror (and unpins one that failed).
	Pins Pinner
	// Where names the cache in the summary: the data dir, or the server.
	Where string
	// Out receives one line per image and a summary.
	Out      io.Writer
	Progress Progress
}

// PreloadingSuffix ends the name of the pin that holds an image's content
// while a preload downloads it (preloadingPin). Such a name is not an
// image reference, so the image list does not show it; a preload killed
// midway leaves it, the next preload of the image removes it, and so does
// unpin given the name.
const PreloadingSuffix = " (preloading)"

func preloadingPin(ref imageref.Ref) string { return ref.String() + PreloadingSuffix }

// PreloadResult sums up a preload.
type PreloadResult struct {
	OK, Failed   int
	Blobs        int64 // fetched from upstream (manifests, configs, layers)
	FetchedBytes int64
	CachedBytes  int64 // read from the cache: already there
}

// Preload pulls each image through p, one after another (each image's
// blobs Parallel at a time), and pins it under its full reference with
// exactly the digests it read. An image that fails is reported and what
// this run pinned of it is unpinned; the others go on.
//
// While an image downloads, what has arrived is pinned under a pin of its
// own (preloadingPin), not under the image's: a run that fails, say a
// re-run while upstream is down, must not take away or shrink the pin an
// earlier, complete run left.
func Preload(ctx context.Context, p *Puller, o PreloadOptions) PreloadResult {
	pg := orNone(o.Progress)
	bars := make([]Bar, len(o.Refs))
	for i, r := range o.Refs {
		bars[i] = pg.Bar(r.String())
	}
	total := pg.Bar(fmt.Sprintf("total (%d images)", len(o.Refs)))
	var res PreloadResult
	var lines []string
	for i, ref := range o.Refs {
		start := time.Now()
		partial := preloadingPin(ref)
		pulled, err := p.Pull(ctx, ref, PullOptions{Platforms: o.Platforms, Bar: bars[i], Total: total,
			Pin: func(ctx context.Context, ds []digest.Digest) error { return o.Pins.Pin(ctx, partial, ds) }})
		// The pins are settled even when the preload is being interrupted
		// (Ctrl-C cancels ctx): a pin of the download left behind would
		// keep its blobs from eviction.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		if err == nil {
			err = o.Pins.Pin(pctx, ref.String(), pulled.Digests)
		}
		// The image's own pin holds what arrived (or the earlier run's
		// pin still does): the pin of the download goes.
		if uerr := o.Pins.Unpin(pctx, partial); uerr != nil && !errors.Is(uerr, admin.ErrNoSuchPin) {
			err = errors.Join(err, uerr)
		}
		cancel()
		res.Blobs += pulled.Fetched
		res.FetchedBytes += pulled.FetchedBytes
		res.CachedBytes += pulled.CachedBytes
		if err != nil {
			res.Failed++
			bars[i].Fail()
			lines = append(lines, fmt.Sprintf("FAILED  %s: %v", ref, err))
			continue
		}
		res.OK++
		bars[i].Done()
		lines = append(lines, fmt.Sprintf("ok      %s %s: %d blobs pinned, %d fetched (%s), %s already cached, %s",
			ref, pulled.Root, len(pulled.Digests), pulled.Fetched, humanize.IBytes(uint64(pulled.FetchedBytes)),
			humanize.IBytes(uint64(pulled.CachedBytes)), time.Since(start).Round(time.Millisecond)))
	}
	total.Done()
	pg.Wait()
	for _, l := range lines {
		fmt.Fprintln(o.Out, l)
	}
	fmt.Fprintf(o.Out, "preloaded %d of %d images into %s: %d blobs fetched (%s), %s already cached\n",
		res.OK, len(o.Refs), o.Where, res.Blobs, humanize.IBytes(uint64(res.FetchedBytes)), humanize.IBytes(uint64(res.CachedBytes)))
	return res
}

// tracker counts one image's transfers, as the observer sees them.
type tracker struct {
	bar, total Bar
	blobs      atomic.Int64 // answers the mirror fetched upstream
	fetched    atomic.Int64
	cached     atomic.Int64
}

func (t *tracker) add(n int64, fetched bool) {
	if fetched {
		t.fetched.Add(n)
	} else {
		t.cached.Add(n)
	}
	t.bar.Add(n)
	t.total.Add(n)
}

type trackerKey struct{}

// headKey carries a *proxy.Outcome that the observer fills with a HEAD's
// cache outcome.
type headKey struct{}

// outcomeOf is how the mirror says it answered (proxy.CacheHeader).
func outcomeOf(resp *http.Response) proxy.Outcome {
	o, _ := proxy.ParseOutcome(resp.Header.Get(proxy.CacheHeader))
	return o
}

// observer is the transport under the registry client. From each content
// answer's X-Regmirror-Cache it tells what the mirror fetched from what it
// already had, and counts the body bytes as they are read into the
// request's tracker (from the request context) and its progress bars.
type observer struct {
	next http.RoundTripper
}

func (o *observer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := o.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	if req.Method == http.MethodHead {
		if out, ok := req.Context().Value(headKey{}).(*proxy.Outcome); ok {
			*out = outcomeOf(resp)
		}
		return resp, nil
	}
	tr, _ := req.Context().Value(trackerKey{}).(*tracker)
	if tr == nil || req.Method != http.MethodGet ||
		!(strings.Contains(req.URL.Path, "/blobs/") || strings.Contains(req.URL.Path, "/manifests/")) {
		return resp, nil
	}
	fetched := !outcomeOf(resp).FromCache()
	if fetched {
		tr.blobs.Add(1)
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, tr: tr, fetched: fetched}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	tr      *tracker
	fetched bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.tr.add(int64(n), b.fetched)
	}
	return n, err
}

// graph is one pull's state.
type graph struct {
	p   *Puller
	tr  *tracker
	pin func(ctx context.Context, digests []digest.Digest) error

	mu      sync.Mutex
	digests []digest.Digest
	seen    map[digest.Digest]bool
}

// known is a copy of the digests recorded so far.
func (g *graph) known() []digest.Digest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]digest.Digest(nil), g.digests...)
}

// add records a digest of the image's graph; it reports whether it is new.
func (g *graph) add(d digest.Digest, size int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seen[d] {
		return false
	}
	g.seen[d] = true
	g.digests = append(g.digests, d)
	g.tr.bar.Grow(size)
	g.tr.total.Grow(size)
	return true
}

func (g *graph) pull(ctx context.Context, ref imageref.Ref, plats []v1.Platform) (digest.Digest, error) {
	repo := g.p.repository(ref)
	top := ref.Tag
	if ref.Digest != "" {
		top = ref.Digest.String()
	}
	body, desc, err := g.p.reg.GetManifest(ctx, repo, top)
	if err != nil {
		return "", err
	}
	root := desc.Digest
	if err := g.manifest(ctx, repo, body, desc, plats, true); err != nil {
		return root, err
	}
	// cosign's signature and attestation tags.
	for _, suffix := range []string{".sig", ".att"} {
		tag := root.Algorithm().String() + "-" + root.Encoded() + suffix
		body, desc, err := g.p.reg.GetManifest(ctx, repo, tag)
		if errors.Is(err, upstream.ErrNotFound) {
			continue
		}
		if err == nil {
			err = g.manifest(ctx, repo, body, desc, nil, false)
		}
		if err != nil {
			return root, fmt.Errorf("signature tag %s: %w", tag, err)
		}
	}
	return root, g.referrers(ctx, repo, root)
}

// manifest reads a manifest's graph: an index's wanted children, an
// image's config and layers. top says it is the image the user named (an
// index without any wanted platform is then an error).
func (g *graph) manifest(ctx context.Context, repo string, body []byte, desc upstream.Descriptor, plats []v1.Platform, top bool) error {
	d := desc.Digest
	g.add(d, desc.Size) // already read whole
	switch desc.MediaType {
	case upstream.MediaTypeOCIIndex, upstream.MediaTypeDockerManifestList:
		im, err := v1.ParseIndexManifest(bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("index %s: %w", d, err)
		}
		n := 0
		for _, child := range im.Manifests {
			if !platformWanted(plats, child.Platform) {
				continue
			}
			n++
			cbody, cdesc, err := g.p.reg.GetManifest(ctx, repo, child.Digest.String())
			if err != nil {
				return fmt.Errorf("manifest %s: %w", child.Digest, err)
			}
			if err := g.manifest(ctx, repo, cbody, cdesc, nil, false); err != nil {
				return err
			}
		}
		if n == 0 && top {
			return fmt.Errorf("index %s has no manifest for %s", d, platformsString(plats))
		}
		return nil
	}
	m, err := v1.ParseManifest(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("manifest %s: %w", d, err)
	}
	var blobs []v1.Descriptor
	for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if g.add(digest.Digest(b.Digest.String()), b.Size) {
			blobs = append(blobs, b)
		}
	}
	if g.pin != nil {
		if err := g.pin(ctx, g.known()); err != nil {
			return fmt.Errorf("pinning: %w", err)
		}
	}
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(Parallel)
	for _, b := range blobs {
		eg.Go(func() error {
			err := g.blob(ectx, repo, b)
			if err != nil && archive.Foreign(b) && errors.Is(err, upstream.ErrNotFound) {
				return nil // non-distributable: the registry need not have it
			}
			return err
		})
	}
	return eg.Wait()
}

// blob fetches one blob through the mirror, which caches it. A blob the
// mirror already holds ("hit": verified when it was stored) is not read
// again; anything else is read whole and checked against its digest.
func (g *graph) blob(ctx context.Context, repo string, b v1.Descriptor) error {
	d, err := digest.Parse(b.Digest.String())
	if err != nil {
		return fmt.Errorf("blob %q: %w", b.Digest, err)
	}
	// A HEAD never makes the mirror download; it says whether it has it.
	var outcome proxy.Outcome
	if _, err := g.p.reg.HeadBlob(context.WithValue(ctx, headKey{}, &outcome), repo, d); err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	if outcome == proxy.OutcomeHit {
		g.tr.add(b.Size, false)
		return nil
	}
	blob, err := g.p.reg.GetBlob(ctx, repo, d, 0)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	defer blob.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, blob.Body)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.String() || n != b.Size {
		return fmt.Errorf("blob %s: got %d bytes with digest %s, want %d bytes", d, n, got, b.Size)
	}
	return nil
}

// referrers reads the OCI referrers of subject through the mirror; a 404
// (no referrers API upstream) means none.
func (g *graph) referrers(ctx context.Context, repo string, subject digest.Digest) error {
	body, _, err := g.p.reg.Referrers(ctx, repo, subject, "")
	if errors.Is(err, upstream.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("referrers of %s: %w", subject, err)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("referrers of %s: %w", subject, err)
	}
	for _, m := range idx.Manifests {
		body, desc, err := g.p.reg.GetManifest(ctx, repo, m.Digest.String())
		if err == nil {
			err = g.manifest(ctx, repo, body, desc, nil, false)
		}
		if err != nil {
			return fmt.Errorf("referrer %s: %w", m.Digest, err)
		}
	}
	return nil
}
