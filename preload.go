package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/archive"
	"github.com/regmirror/regmirror/imageref"
	"github.com/regmirror/regmirror/proxy"
)

// Preload fetches images into the cache through a regmirror HTTP endpoint,
// so that what it stores went through exactly the verified path of a pull
// (fill, digest check, tag record, repository links), and pins them.
//
// The endpoint is a server started in this process on 127.0.0.1:0 when the
// data dir is free, else the server that holds it (--server, or derived
// from listen). Images go one after another; each image's blobs are read
// by up to preloadParallel requests at a time. For each image preload
// reads the top-level manifest or index; of an index, the child manifests
// of the chosen platforms (all with --all-platforms); of every manifest,
// its config and layers (non-distributable layers that the registry does
// not serve are skipped); then the cosign tags sha256-<hex>.sig and .att
// of the top-level digest, and the referrers of the top-level digest, each
// with its whole graph, when they exist. The image is then pinned, under
// its full reference, with exactly the digests it read.
func preloadCommand() *cli.Command {
	return &cli.Command{
		Name:      "preload",
		Usage:     "fetch images (all their layers, signatures and referrers) into the cache and pin them",
		ArgsUsage: "[IMAGE...]",
		Description: "Images are named as arguments and/or with --file. By default, of a multi-platform image\n" +
			"preload fetches linux/amd64 and the host's own platform (linux/" + runtime.GOARCH + " here): what\n" +
			"a site usually runs, without the cost of every platform. Works on a free data dir (a\n" +
			"temporary server on loopback is started) or through the running server (see --server).",
		Flags: append(manageFlags(fileFlag,
			&cli.StringFlag{Name: "platform", Usage: "platforms to fetch of multi-platform images, e.g. linux/amd64,linux/arm64/v8 (default linux/amd64 and the host's)"},
			&cli.BoolFlag{Name: "all-platforms", Usage: "fetch every platform of multi-platform images"},
		), upstreamFlags()...),
		Action: runPreload,
	}
}

// preloadParallel is how many blobs of one image are read at once.
const preloadParallel = 4

func runPreload(c *cli.Context) error {
	refs, err := imageArgs(c)
	if err != nil {
		return err
	}
	if len(refs) == 0 {
		return errors.New("preload: no images: name them as arguments or with --file")
	}
	plats, err := choosePlatforms(c.String("platform"), c.Bool("all-platforms"))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c.Context = ctx
	return withTarget(c, reachMirror, func(ctx context.Context, t *target) error {
		res := preload(ctx, t, t.Config.DefaultRegistry, refs, plats, c.App.Writer, c.App.ErrWriter)
		if res.failed > 0 {
			return fmt.Errorf("preload: %d of %d images failed", res.failed, len(refs))
		}
		return nil
	})
}

// choosePlatforms reads --platform; nil means every platform.
func choosePlatforms(flag string, all bool) ([]v1.Platform, error) {
	if all {
		if flag != "" {
			return nil, errors.New("--platform and --all-platforms exclude each other")
		}
		return nil, nil
	}
	var specs []string
	if flag == "" {
		specs = []string{"linux/amd64", "linux/" + runtime.GOARCH}
	} else {
		specs = strings.Split(flag, ",")
	}
	var out []v1.Platform
	seen := map[string]bool{}
	for _, s := range specs {
		s = strings.TrimSpace(s)
		p, err := v1.ParsePlatform(s)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("--platform %q: want os/arch[/variant], e.g. linux/arm64/v8", s)
		}
		if !seen[p.String()] {
			seen[p.String()] = true
			out = append(out, *p)
		}
	}
	return out, nil
}

// platformWanted: same OS and architecture, and the variant when asked.
func platformWanted(plats []v1.Platform, p *v1.Platform) bool {
	if plats == nil {
		return true
	}
	if p == nil {
		return false
	}
	for _, w := range plats {
		if w.OS == p.OS && w.Architecture == p.Architecture && (w.Variant == "" || w.Variant == p.Variant) {
			return true
		}
	}
	return false
}

// quietLogger keeps a server started for a command from logging every
// request at info level over the command's own output.
func quietLogger(cfg config, log *slog.Logger) *slog.Logger {
	if strings.EqualFold(cfg.LogLevel, "debug") {
		return log
	}
	return slog.New(&minLevel{Handler: log.Handler(), min: slog.LevelWarn})
}

type minLevel struct {
	slog.Handler
	min slog.Level
}

func (m *minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.Handler.Enabled(ctx, l)
}

func (m *minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return &minLevel{Handler: m.Handler.WithAttrs(a), min: m.min}
}

func (m *minLevel) WithGroup(g string) slog.Handler {
	return &minLevel{Handler: m.Handler.WithGroup(g), min: m.min}
}

// preloadResult sums up a preload.
type preloadResult struct {
	ok, failed   int
	blobs        int64 // fetched from upstream (manifests, configs, layers)
	fetchedBytes int64
	cachedBytes  int64 // read from the cache: already there
}

func preload(ctx context.Context, ep *target, defaultRegistry string, refs []imageref.Ref, plats []v1.Platform, out, barOut io.Writer) preloadResult {
	host := strings.TrimPrefix(strings.TrimPrefix(ep.URL, "http://"), "https://")
	transport := ep.PullTransport()
	defer transport.CloseIdleConnections() // the server may be shutting down next
	var next http.RoundTripper = transport
	ob := &observer{next: next}
	pg := newProgress(barOut)
	bars := make([]*bar, len(refs))
	for i, r := range refs {
		bars[i] = pg.bar(r.String(), 0)
	}
	total := pg.bar(fmt.Sprintf("total (%d images)", len(refs)), 0)
	var res preloadResult
	var lines []string
	for i, ref := range refs {
		tr := &tracker{bar: bars[i], total: total}
		pl := &imagePuller{host: host, defaultRegistry: defaultRegistry, plats: plats, client: &http.Client{Transport: ob}, tr: tr,
			pin: func(ctx context.Context, ds []digest.Digest) error { return ep.Ops.Pin(ctx, ref.String(), ds) }}
		start := time.Now()
		root, digests, err := pl.pull(context.WithValue(ctx, trackerKey{}, tr), ref)
		if err == nil {
			err = ep.Ops.Pin(ctx, ref.String(), digests)
		} else if len(pl.known()) > 0 {
			// Pinned piece by piece while it downloaded: an image that did
			// not arrive whole is not left pinned.
			if uerr := ep.Ops.Unpin(ctx, ref.String()); uerr != nil && !errors.Is(uerr, admin.ErrNoSuchPin) {
				err = errors.Join(err, uerr)
			}
		}
		res.blobs += tr.blobs.Load()
		res.fetchedBytes += tr.fetched.Load()
		res.cachedBytes += tr.cached.Load()
		if err != nil {
			res.failed++
			bars[i].fail()
			lines = append(lines, fmt.Sprintf("FAILED  %s: %v", ref, err))
			continue
		}
		res.ok++
		bars[i].done()
		lines = append(lines, fmt.Sprintf("ok      %s %s: %d blobs pinned, %d fetched (%s), %s already cached, %s",
			ref, root, len(digests), tr.blobs.Load(), humanize.IBytes(uint64(tr.fetched.Load())),
			humanize.IBytes(uint64(tr.cached.Load())), time.Since(start).Round(time.Millisecond)))
	}
	total.done()
	pg.wait()
	for _, l := range lines {
		fmt.Fprintln(out, l)
	}
	fmt.Fprintf(out, "preloaded %d of %d images into %s: %d blobs fetched (%s), %s already cached\n",
		res.ok, len(refs), ep.Where, res.blobs, humanize.IBytes(uint64(res.fetchedBytes)), humanize.IBytes(uint64(res.cachedBytes)))
	return res
}

// tracker counts one image's transfers, as the observer sees them.
type tracker struct {
	bar, total *bar
	blobs      atomic.Int64 // answers the mirror fetched upstream
	fetched    atomic.Int64
	cached     atomic.Int64
}

type trackerKey struct{}

// observer is the HTTP transport of preload's client. From each content
// answer's X-Regmirror-Cache it tells what the mirror fetched from what it
// already had, and counts the body bytes as they are read into the
// request's tracker (from the request context) and its progress bars.
type observer struct {
	next http.RoundTripper
}

func (o *observer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := o.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK || req.Method != http.MethodGet {
		return resp, err
	}
	tr, _ := req.Context().Value(trackerKey{}).(*tracker)
	if tr == nil || !(strings.Contains(req.URL.Path, "/blobs/") || strings.Contains(req.URL.Path, "/manifests/")) {
		return resp, nil
	}
	fetched := true
	switch resp.Header.Get(proxy.CacheHeader) {
	case "hit", "revalidated", "stale":
		fetched = false
	}
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
		if b.fetched {
			b.tr.fetched.Add(int64(n))
		} else {
			b.tr.cached.Add(int64(n))
		}
		b.tr.bar.add(int64(n))
		b.tr.total.add(int64(n))
	}
	return n, err
}

// imagePuller pulls one image's graph through the mirror.
type imagePuller struct {
	host            string // the mirror, "127.0.0.1:5000"
	defaultRegistry string
	plats           []v1.Platform
	client          *http.Client
	tr              *tracker

	// pin, when set, is called with the digests known so far before each
	// manifest's blobs are fetched, so that eviction cannot take them
	// between their fill and the image's final pin.
	pin func(ctx context.Context, digests []digest.Digest) error

	puller  *remote.Puller
	mu      sync.Mutex
	digests []digest.Digest
	seen    map[digest.Digest]bool
}

// known is a copy of the digests recorded so far.
func (p *imagePuller) known() []digest.Digest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]digest.Digest(nil), p.digests...)
}

// repository names ref's repository on the mirror: bare for the default
// registry (as the Docker daemon asks), else with the registry as a path
// prefix (/v2/ghcr.io/org/app/...), which the proxy routes.
func (p *imagePuller) repository(ref imageref.Ref) (name.Repository, error) {
	path := ref.Repo
	if ref.Registry != p.defaultRegistry {
		path = ref.Registry + "/" + ref.Repo
	}
	return name.NewRepository(p.host+"/"+path, name.Insecure)
}

// add records a digest of the image's graph; it reports whether it is new.
func (p *imagePuller) add(d digest.Digest, size int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen[d] {
		return false
	}
	p.seen[d] = true
	p.digests = append(p.digests, d)
	p.tr.bar.grow(size)
	p.tr.total.grow(size)
	return true
}

func (p *imagePuller) pull(ctx context.Context, ref imageref.Ref) (digest.Digest, []digest.Digest, error) {
	p.seen = map[digest.Digest]bool{}
	repo, err := p.repository(ref)
	if err != nil {
		return "", nil, err
	}
	p.puller, err = remote.NewPuller(remote.WithTransport(p.client.Transport), remote.WithContext(ctx))
	if err != nil {
		return "", nil, err
	}
	var top name.Reference = repo.Tag(ref.Tag)
	if ref.Digest != "" {
		top = repo.Digest(ref.Digest.String())
	}
	desc, err := p.puller.Get(ctx, top)
	if err != nil {
		return "", nil, err
	}
	root := digest.Digest(desc.Digest.String())
	if err := p.manifest(ctx, repo, desc, p.plats, true); err != nil {
		return root, nil, err
	}
	// cosign's signature and attestation tags.
	for _, suffix := range []string{".sig", ".att"} {
		tag := root.Algorithm().String() + "-" + root.Encoded() + suffix
		d, err := p.puller.Get(ctx, repo.Tag(tag))
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return root, nil, fmt.Errorf("signature tag %s: %w", tag, err)
		}
		if err := p.manifest(ctx, repo, d, nil, false); err != nil {
			return root, nil, fmt.Errorf("signature tag %s: %w", tag, err)
		}
	}
	if err := p.referrers(ctx, repo, root); err != nil {
		return root, nil, err
	}
	return root, p.digests, nil
}

func isNotFound(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound
}

// manifest reads desc's graph: an index's wanted children, an image's
// config and layers. top says desc is the image the user named (an index
// without any wanted platform is then an error).
func (p *imagePuller) manifest(ctx context.Context, repo name.Repository, desc *remote.Descriptor, plats []v1.Platform, top bool) error {
	d := digest.Digest(desc.Digest.String())
	p.add(d, desc.Size) // already read whole by Get
	if desc.MediaType.IsIndex() {
		im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return fmt.Errorf("index %s: %w", d, err)
		}
		n := 0
		for _, child := range im.Manifests {
			if !platformWanted(plats, child.Platform) {
				continue
			}
			n++
			cd, err := p.puller.Get(ctx, repo.Digest(child.Digest.String()))
			if err != nil {
				return fmt.Errorf("manifest %s: %w", child.Digest, err)
			}
			if err := p.manifest(ctx, repo, cd, nil, false); err != nil {
				return err
			}
		}
		if n == 0 && top {
			return fmt.Errorf("index %s has no manifest for %s", d, platformsString(plats))
		}
		return nil
	}
	if !desc.MediaType.IsImage() && desc.MediaType != "" && !strings.HasSuffix(string(desc.MediaType), "+json") {
		return fmt.Errorf("manifest %s: unsupported media type %q", d, desc.MediaType)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return fmt.Errorf("manifest %s: %w", d, err)
	}
	var blobs []v1.Descriptor
	for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if p.add(digest.Digest(b.Digest.String()), b.Size) {
			blobs = append(blobs, b)
		}
	}
	if p.pin != nil {
		if err := p.pin(ctx, p.known()); err != nil {
			return fmt.Errorf("pinning: %w", err)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(preloadParallel)
	for _, b := range blobs {
		g.Go(func() error {
			err := p.blob(gctx, repo, b)
			if err != nil && archive.Foreign(b) && errors.Is(err, errBlobNotFound) {
				return nil // non-distributable: the registry need not have it
			}
			return err
		})
	}
	return g.Wait()
}

// errBlobNotFound is a blob the mirror answered 404 for.
var errBlobNotFound = errors.New("blob not found")

// blob fetches one blob through the mirror, which caches it. A blob the
// mirror already holds ("hit": verified when it was stored) is not read
// again; anything else is read whole and checked against its digest.
func (p *imagePuller) blob(ctx context.Context, repo name.Repository, b v1.Descriptor) error {
	u := "http://" + p.host + "/v2/" + repo.RepositoryStr() + "/blobs/" + b.Digest.String()
	do := func(method string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := p.client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("blob %s: %w", b.Digest, err)
		}
		switch resp.StatusCode {
		case http.StatusOK:
			return resp, nil
		case http.StatusNotFound:
			resp.Body.Close()
			return nil, fmt.Errorf("blob %s: %w", b.Digest, errBlobNotFound)
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		return nil, fmt.Errorf("blob %s: %s: %s", b.Digest, resp.Status, bytes.TrimSpace(msg))
	}
	// A HEAD never makes the mirror download; it says whether it has it.
	head, err := do(http.MethodHead)
	if err != nil {
		return err
	}
	head.Body.Close()
	if head.Header.Get(proxy.CacheHeader) == "hit" {
		if tr, ok := ctx.Value(trackerKey{}).(*tracker); ok {
			tr.cached.Add(b.Size)
			tr.bar.add(b.Size)
			tr.total.add(b.Size)
		}
		return nil
	}
	resp, err := do(http.MethodGet)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("blob %s: %w", b.Digest, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != b.Digest.String() || n != b.Size {
		return fmt.Errorf("blob %s: got %d bytes with digest %s, want %d bytes", b.Digest, n, got, b.Size)
	}
	return nil
}

// referrers reads the OCI referrers of subject through the mirror; a 404
// (no referrers API upstream) means none.
func (p *imagePuller) referrers(ctx context.Context, repo name.Repository, subject digest.Digest) error {
	u := "http://" + p.host + "/v2/" + repo.RepositoryStr() + "/referrers/" + subject.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", string(types.OCIImageIndex))
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("referrers: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("referrers of %s: %s: %s", subject, resp.Status, bytes.TrimSpace(body))
	}
	var idx v1.IndexManifest
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&idx); err != nil {
		return fmt.Errorf("referrers of %s: %w", subject, err)
	}
	for _, m := range idx.Manifests {
		d, err := p.puller.Get(ctx, repo.Digest(m.Digest.String()))
		if err != nil {
			return fmt.Errorf("referrer %s: %w", m.Digest, err)
		}
		if err := p.manifest(ctx, repo, d, nil, false); err != nil {
			return fmt.Errorf("referrer %s: %w", m.Digest, err)
		}
	}
	return nil
}

func platformsString(plats []v1.Platform) string {
	s := make([]string, len(plats))
	for i, p := range plats {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
