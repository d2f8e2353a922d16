package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/imageref"
)

// Purger is the optional side of Ops that throws images out of the cache.
// Local and Client implement it; Handler then answers POST
// /_regmirror/purge.
type Purger interface {
	Purge(ctx context.Context, req PurgeRequest) (PurgeResult, error)
}

var (
	_ Purger = (*Local)(nil)
	_ Purger = (*Client)(nil)
)

// PurgeRequest names what to throw out.
type PurgeRequest struct {
	// Ref is an image ("alpine:3.20", "ghcr.io/org/app@sha256:…"), or with
	// AllTags a repository ("alpine", "ghcr.io/org/app").
	Ref string `json:"ref"`
	// AllTags drops every tag of the repository Ref names, and its links.
	AllTags bool `json:"all_tags,omitempty"`
	// KeepBlobs drops the tag records only: the next pull asks upstream
	// what the tag points to, and finds the content still cached.
	KeepBlobs bool `json:"keep_blobs,omitempty"`
}

// PurgeResult reports a purge.
type PurgeResult struct {
	Ref string `json:"ref"`
	// Tags are the tag records dropped (full references).
	Tags []string `json:"tags"`
	// Blobs and Bytes were deleted; Shared blobs of the image were kept
	// because another cached image or a pin uses them.
	Blobs  int   `json:"blobs"`
	Bytes  int64 `json:"bytes"`
	Shared int   `json:"shared"`
}

// purgeStore is what Purge needs of the cache beyond Store; the cache's
// Store has it. Blobs go only through Delete, the path eviction uses.
type purgeStore interface {
	Store
	DeleteTag(registry, repo, tag string) error
	DeleteLink(registry, repo string, d digest.Digest) error
	DeleteTagList(registry, repo string) error
	Delete(d digest.Digest) error
	Walk(fn func(cache.BlobInfo) error) error
}

// ErrPurgeUnsupported: the store cannot purge.
var ErrPurgeUnsupported = errors.New("admin: this cache cannot purge")

// isManifestType tells manifests and indexes (image roots) from configs
// and layers by the media type they were cached with.
func isManifestType(mt string) bool {
	return strings.Contains(mt, "manifest") || strings.HasSuffix(mt, "image.index.v1+json")
}

// Purge implements Purger. A tag's record is dropped; unless KeepBlobs, so
// is every blob of the image graph it (or a digest reference) names that no
// other cached image — tagged, pulled by digest, or pinned — reaches (so a
// pinned image loses its tag record but keeps its content).
func (l *Local) Purge(ctx context.Context, req PurgeRequest) (PurgeResult, error) {
	ps, ok := l.Store.(purgeStore)
	if !ok {
		return PurgeResult{}, ErrPurgeUnsupported
	}
	ref, err := parsePurgeRef(req)
	if err != nil {
		return PurgeResult{}, err
	}
	res := PurgeResult{Ref: ref.String(), Tags: []string{}}
	if req.AllTags {
		res.Ref = ref.Name()
	}
	pinned := map[digest.Digest]bool{}
	if err := l.Store.Pins(func(_ string, ds []digest.Digest) error {
		for _, d := range ds {
			pinned[d] = true
		}
		return nil
	}); err != nil {
		return res, err
	}

	// Which tags go, and which roots their images grow from.
	roots := map[digest.Digest]bool{}
	var tags []string
	err = l.Store.Tags(func(registry, repo, tag string, rec cache.TagRecord) error {
		if registry != ref.Registry || repo != ref.Repo {
			return nil
		}
		if req.AllTags || (ref.Digest == "" && tag == ref.Tag) || (ref.Digest != "" && rec.Digest == ref.Digest) {
			tags = append(tags, tag)
			roots[rec.Digest] = true
		}
		return ctx.Err()
	})
	if err != nil {
		return res, err
	}
	if ref.Digest != "" {
		roots[ref.Digest] = true
	}
	if req.AllTags {
		// Images pulled by digest in the repository are its too.
		err := l.Store.Links(func(registry, repo string, d digest.Digest) error {
			if registry == ref.Registry && repo == ref.Repo {
				if info, err := l.Store.Stat(d); err == nil && isManifestType(info.MediaType) {
					roots[d] = true
				}
			}
			return ctx.Err()
		})
		if err != nil {
			return res, err
		}
	}
	if len(tags) == 0 && !(ref.Digest != "" && l.cached(ref.Digest)) && !(req.AllTags && len(roots) > 0) {
		return res, fmt.Errorf("%w: %s", ErrNotCached, res.Ref)
	}
	for _, tag := range tags {
		if err := ps.DeleteTag(ref.Registry, ref.Repo, tag); err != nil && !errors.Is(err, cache.ErrNotFound) {
			return res, err
		}
		res.Tags = append(res.Tags, imageref.Ref{Registry: ref.Registry, Repo: ref.Repo, Tag: tag}.String())
	}
	if req.AllTags {
		if err := ps.DeleteTagList(ref.Registry, ref.Repo); err != nil {
			return res, err
		}
	}
	if req.KeepBlobs {
		l.log().Info("purged tags", "ref", res.Ref, "tags", len(res.Tags))
		return res, nil
	}

	// The image's graph, and what every other cached image still needs.
	doomed := map[digest.Digest]bool{}
	for root := range roots {
		ds, err := l.Closure(ctx, root, nil)
		if err != nil && !errors.Is(err, ErrNotCached) {
			return res, fmt.Errorf("reading the graph of %s: %w", root, err)
		}
		for _, d := range ds {
			doomed[d] = true
		}
	}
	keep, err := l.stillNeeded(ctx, ps, doomed, pinned)
	if err != nil {
		return res, err
	}
	for d := range doomed {
		if keep[d] {
			res.Shared++
			continue
		}
		info, err := l.Store.Stat(d)
		if err != nil {
			continue // not cached (a platform never pulled)
		}
		if err := ps.Delete(d); err != nil {
			if errors.Is(err, cache.ErrNotFound) {
				continue
			}
			return res, err
		}
		res.Blobs++
		res.Bytes += info.Size
		if err := ps.DeleteLink(ref.Registry, ref.Repo, d); err != nil {
			l.log().Warn("purge: dropping a link", "digest", d, "err", err)
		}
	}
	if req.AllTags {
		var links []digest.Digest
		_ = l.Store.Links(func(registry, repo string, d digest.Digest) error {
			if registry == ref.Registry && repo == ref.Repo {
				links = append(links, d)
			}
			return nil
		})
		for _, d := range links {
			if err := ps.DeleteLink(ref.Registry, ref.Repo, d); err != nil {
				return res, err
			}
		}
	}
	l.log().Info("purged", "ref", res.Ref, "tags", len(res.Tags), "blobs", res.Blobs, "bytes", res.Bytes, "shared_kept", res.Shared)
	return res, nil
}

func (l *Local) cached(d digest.Digest) bool {
	_, err := l.Store.Stat(d)
	return err == nil
}

// stillNeeded is every digest that a cached image outside doomed reaches:
// the graphs of the remaining tags, of every cached manifest that is not
// itself doomed (images pulled by digest), and every pinned digest.
func (l *Local) stillNeeded(ctx context.Context, ps purgeStore, doomed, pinned map[digest.Digest]bool) (map[digest.Digest]bool, error) {
	keep := map[digest.Digest]bool{}
	for d := range pinned {
		keep[d] = true
	}
	roots := map[digest.Digest]bool{}
	if err := l.Store.Tags(func(_, _, _ string, rec cache.TagRecord) error {
		roots[rec.Digest] = true
		return ctx.Err()
	}); err != nil {
		return nil, err
	}
	if err := ps.Walk(func(info cache.BlobInfo) error {
		if isManifestType(info.MediaType) && !doomed[info.Digest] {
			roots[info.Digest] = true
		}
		return ctx.Err()
	}); err != nil {
		return nil, err
	}
	for root := range roots {
		if keep[root] && !doomed[root] {
			continue
		}
		ds, err := l.Closure(ctx, root, nil)
		if err != nil && !errors.Is(err, ErrNotCached) {
			// An image whose graph cannot be walked (a media type not
			// known, a record that lost it) is kept whole, as far as
			// the digests its manifests mention say.
			l.log().Warn("purge: reading another image's graph; keeping every digest it mentions", "digest", root, "err", err)
			ds = append(ds, l.mentioned(root)...)
		}
		for _, d := range ds {
			keep[d] = true
		}
		keep[root] = true
	}
	return keep, nil
}

// digestText is how a manifest names what it refers to.
var digestText = regexp.MustCompile(`sha256:[0-9a-f]{64}`)

// mentioned is every digest the cached blob root names, and those the
// blobs it names name in turn, read as text: what a graph that cannot be
// walked refers to, at most. Only blobs the size of a manifest are read.
func (l *Local) mentioned(root digest.Digest) []digest.Digest {
	var out []digest.Digest
	seen := map[digest.Digest]bool{root: true}
	for next := []digest.Digest{root}; len(next) > 0; {
		d := next[len(next)-1]
		next = next[:len(next)-1]
		f, info, err := l.Store.Open(d)
		if err != nil {
			continue
		}
		var raw []byte
		if info.Size <= maxManifestBytes {
			raw, _ = io.ReadAll(io.LimitReader(f, maxManifestBytes))
		}
		f.Close()
		for _, m := range digestText.FindAll(raw, -1) {
			if md := digest.Digest(m); !seen[md] {
				seen[md] = true
				out = append(out, md)
				next = append(next, md)
			}
		}
	}
	return out
}

// maxManifestBytes is the largest manifest the mirror keeps (the proxy's
// and the archive's cap).
const maxManifestBytes = 4 << 20

// parsePurgeRef reads the request's reference: an image, or with AllTags a
// repository without tag or digest.
func parsePurgeRef(req PurgeRequest) (imageref.Ref, error) {
	if !req.AllTags {
		return imageref.Parse(req.Ref)
	}
	s := strings.TrimSpace(req.Ref)
	last := s[strings.LastIndexByte(s, '/')+1:]
	if strings.ContainsAny(last, ":@") {
		return imageref.Ref{}, fmt.Errorf("%w: %q: --all-tags takes a repository, without tag or digest", ErrInvalidRef, req.Ref)
	}
	return imageref.Parse(s)
}

// Purge implements Purger.
func (c *Client) Purge(ctx context.Context, req PurgeRequest) (PurgeResult, error) {
	var res PurgeResult
	err := c.do(ctx, http.MethodPost, PathPrefix+"purge", req, &res)
	return res, err
}

// servePurge answers POST /_regmirror/purge.
func servePurge(p Purger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req PurgeRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			reply(w, nil, fmt.Errorf("%w: request body: %v", ErrInvalidRef, err))
			return
		}
		res, err := p.Purge(r.Context(), req)
		reply(w, res, err)
	}
}
