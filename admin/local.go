package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/archive"
	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/eviction"
	"github.com/regmirror/regmirror/imageref"
)

// Store is what the operations need from the cache.
type Store interface {
	Dir() string
	Open(d digest.Digest) (*os.File, cache.BlobInfo, error)
	Stat(d digest.Digest) (cache.BlobInfo, error)
	Usage() (bytes int64, blobs int)
	Tag(registry, repo, tag string) (cache.TagRecord, error)
	Tags(fn func(registry, repo, tag string, rec cache.TagRecord) error) error
	Links(fn func(registry, repo string, d digest.Digest) error) error
	Pins(fn func(name string, digests []digest.Digest) error) error
	SetPin(name string, digests []digest.Digest) error
	DeletePin(name string) error
}

// Evictor is what the operations need from eviction.
type Evictor interface {
	EvictNow(ctx context.Context) (eviction.Result, error)
	SetPinned(key string, pinned bool)
	Stats() eviction.Stats
}

// Local runs the operations against an open cache and its evictor.
type Local struct {
	Store   Store
	Evictor Evictor
	// MaxBytes is the configured budget, 0 for none.
	MaxBytes int64
	// FreeSpace reports free bytes on the cache's filesystem (may be nil).
	FreeSpace func() (int64, error)
	Logger    *slog.Logger

	// pinning serialises the pin edits: each reads every pin, then writes
	// one and tells eviction, and two at once could leave a digest
	// unpinned that a pin lists.
	pinning sync.Mutex
}

var _ Ops = (*Local)(nil)

func (l *Local) log() *slog.Logger {
	if l.Logger == nil {
		return slog.Default()
	}
	return l.Logger
}

// Usage implements Ops.
func (l *Local) Usage(ctx context.Context, top int) (Usage, error) {
	bytes, blobs := l.Store.Usage()
	st := l.Evictor.Stats()
	u := Usage{
		DataDir: l.Store.Dir(), Bytes: bytes, Blobs: int64(blobs),
		MinFree: st.MinFree, FreeBytes: -1,
		PinnedBytes: st.PinnedBytes, PinnedBlobs: st.PinnedBlobs, Evicted: st.EvictedBlobs,
	}
	if l.MaxBytes > 0 {
		u.MaxBytes, u.HighBytes, u.LowBytes = st.MaxBytes, st.HighBytes, st.LowBytes
	}
	if l.FreeSpace != nil {
		if free, err := l.FreeSpace(); err == nil {
			u.FreeBytes = free
		}
	}
	if err := l.Store.Pins(func(string, []digest.Digest) error { u.Pins++; return nil }); err != nil {
		return u, err
	}
	repos := map[[2]string]*RepoUsage{}
	err := l.Store.Links(func(registry, repo string, d digest.Digest) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		info, err := l.Store.Stat(d)
		if err != nil {
			return nil // evicted since; the link outlives the blob
		}
		k := [2]string{registry, repo}
		r := repos[k]
		if r == nil {
			r = &RepoUsage{Registry: registry, Repo: repo}
			repos[k] = r
		}
		r.Bytes += info.Size
		r.Blobs++
		return nil
	})
	if err != nil {
		return u, err
	}
	for _, r := range repos {
		u.TopRepos = append(u.TopRepos, *r)
	}
	sort.Slice(u.TopRepos, func(i, j int) bool {
		a, b := u.TopRepos[i], u.TopRepos[j]
		if a.Bytes != b.Bytes {
			return a.Bytes > b.Bytes
		}
		return a.Registry+"/"+a.Repo < b.Registry+"/"+b.Repo
	})
	if top >= 0 && len(u.TopRepos) > top {
		u.TopRepos = u.TopRepos[:top]
	}
	return u, nil
}

// GC implements Ops.
func (l *Local) GC(ctx context.Context) (GCResult, error) {
	res, err := l.Evictor.EvictNow(ctx)
	return GCResult{Blobs: res.Blobs, Bytes: res.Bytes, Remaining: res.Remaining, Failed: res.Failed}, err
}

// Images implements Ops.
func (l *Local) Images(ctx context.Context) ([]Image, error) {
	pinned := map[string]bool{}
	var out []Image
	err := l.Store.Pins(func(name string, ds []digest.Digest) error {
		pinned[name] = true
		if r, err := imageref.Parse(name); err == nil && r.Digest != "" {
			out = append(out, Image{Ref: name, Registry: r.Registry, Repo: r.Repo, Digest: r.Digest, Pinned: true})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = l.Store.Tags(func(registry, repo, tag string, rec cache.TagRecord) error {
		ref := imageref.Ref{Registry: registry, Repo: repo, Tag: tag}.String()
		out = append(out, Image{Ref: ref, Registry: registry, Repo: repo, Tag: tag, Digest: rec.Digest,
			MediaType: rec.MediaType, CheckedAt: rec.CheckedAt, Pinned: pinned[ref]})
		return ctx.Err()
	})
	return out, err
}

// Pin implements Ops. A pin of the same name is replaced: digests it
// listed that no pin lists any more become evictable again.
func (l *Local) Pin(ctx context.Context, name string, digests []digest.Digest) error {
	l.pinning.Lock()
	defer l.pinning.Unlock()
	return l.setPin(name, digests)
}

// AddToPin adds digests to the pin called name (creating it if create), for a pin
// sent in parts (see Client.Pin).
func (l *Local) AddToPin(ctx context.Context, name string, digests []digest.Digest, create bool) error {
	l.pinning.Lock()
	defer l.pinning.Unlock()
	mine, _, err := l.pinsBesides(name)
	if err != nil {
		return err
	}
	if mine == nil && !create {
		return fmt.Errorf("%w: %s (the server restarted while the pin was sent: pin again)", ErrNoSuchPin, name)
	}
	all := slices.Concat(mine, digests)
	slices.Sort(all)
	return l.setPin(name, slices.Compact(all))
}

// MovePin replaces the digests of the pin called to with those of the pin
// called from, which goes: the last step of a pin sent in parts. Nothing
// both list is unpinned at any point.
func (l *Local) MovePin(ctx context.Context, from, to string) error {
	l.pinning.Lock()
	defer l.pinning.Unlock()
	moved, _, err := l.pinsBesides(from)
	if err != nil {
		return err
	}
	if moved == nil {
		return fmt.Errorf("%w: %s", ErrNoSuchPin, from)
	}
	if err := l.setPin(to, moved); err != nil {
		return err
	}
	return l.unpin(from)
}

func (l *Local) setPin(name string, digests []digest.Digest) error {
	old, others, err := l.pinsBesides(name)
	if err != nil {
		return err
	}
	if err := l.Store.SetPin(name, digests); err != nil {
		return err
	}
	kept := map[digest.Digest]bool{}
	for _, d := range digests {
		kept[d] = true
		l.Evictor.SetPinned(d.String(), true)
	}
	for _, d := range old {
		if !kept[d] && !others[d] {
			l.Evictor.SetPinned(d.String(), false)
		}
	}
	l.log().Info("pinned", "image", name, "digests", len(digests))
	return nil
}

// pinsBesides returns the digests of the pin called name (nil if none) and
// the set of digests every other pin lists.
func (l *Local) pinsBesides(name string) (mine []digest.Digest, others map[digest.Digest]bool, err error) {
	others = map[digest.Digest]bool{}
	err = l.Store.Pins(func(n string, ds []digest.Digest) error {
		if n == name {
			mine = ds
			return nil
		}
		for _, d := range ds {
			others[d] = true
		}
		return nil
	})
	return mine, others, err
}

// PinRef implements Ops.
func (l *Local) PinRef(ctx context.Context, s string) (PinResult, error) {
	ref, err := imageref.Parse(s)
	if err != nil {
		return PinResult{}, err
	}
	root := ref.Digest
	if root == "" {
		rec, err := l.Store.Tag(ref.Registry, ref.Repo, ref.Tag)
		if errors.Is(err, cache.ErrNotFound) {
			return PinResult{}, fmt.Errorf("%w: %s", ErrNotCached, ref)
		}
		if err != nil {
			return PinResult{}, err
		}
		root = rec.Digest
	}
	res := PinResult{Name: ref.String(), Digest: root}
	digests, err := l.Closure(ctx, root, func(info cache.BlobInfo, cached bool) {
		if cached {
			res.Blobs++
			res.Bytes += info.Size
		} else {
			res.Missing++
		}
	})
	if err != nil {
		return res, err
	}
	return res, l.Pin(ctx, res.Name, digests)
}

// Closure returns every digest of the image graph under root that the cache
// can name: the manifests it holds and everything they reference. seen, if
// not nil, hears of each digest and whether its content is cached.
func (l *Local) Closure(ctx context.Context, root digest.Digest, seen func(info cache.BlobInfo, cached bool)) ([]digest.Digest, error) {
	info, err := l.Store.Stat(root)
	if errors.Is(err, cache.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotCached, root)
	}
	if err != nil {
		return nil, err
	}
	var out []digest.Digest
	report := func(d digest.Digest, size int64) {
		out = append(out, d)
		if seen == nil {
			return
		}
		info, err := l.Store.Stat(d)
		if err != nil {
			seen(cache.BlobInfo{Digest: d, Size: size}, false)
			return
		}
		seen(info, true)
	}
	err = archive.WalkCached(ctx, Source{l.Store}, root, info.MediaType,
		func(desc v1.Descriptor) error {
			report(digest.Digest(desc.Digest.String()), desc.Size)
			return nil
		},
		func(desc v1.Descriptor) {
			if seen != nil {
				seen(cache.BlobInfo{Digest: digest.Digest(desc.Digest.String()), Size: desc.Size}, false)
			}
		})
	return out, err
}

// Unpin implements Ops.
func (l *Local) Unpin(ctx context.Context, name string) error {
	l.pinning.Lock()
	defer l.pinning.Unlock()
	return l.unpin(name)
}

func (l *Local) unpin(name string) error {
	mine, others, err := l.pinsBesides(name)
	if err != nil {
		return err
	}
	if mine == nil {
		if err := l.Store.DeletePin(name); errors.Is(err, cache.ErrNotFound) {
			return fmt.Errorf("%w: %s", ErrNoSuchPin, name)
		} else if err != nil {
			return err
		}
	} else if err := l.Store.DeletePin(name); err != nil {
		return err
	}
	for _, d := range mine {
		if !others[d] {
			l.Evictor.SetPinned(d.String(), false)
		}
	}
	l.log().Info("unpinned", "image", name)
	return nil
}

// PinnedDigests is the union of every pin's digests, for loading eviction.
func PinnedDigests(s Store) (map[digest.Digest]bool, error) {
	out := map[digest.Digest]bool{}
	err := s.Pins(func(_ string, ds []digest.Digest) error {
		for _, d := range ds {
			out[d] = true
		}
		return nil
	})
	return out, err
}

// Source serves cache content to the archive package: a missing blob is an
// fs.ErrNotExist error, as archive.BlobSource asks.
type Source struct {
	Store interface {
		Open(d digest.Digest) (*os.File, cache.BlobInfo, error)
	}
}

// verifiedOpener is the optional side of Source.Store that checks content
// as it is read and drops a blob found damaged (cache.Store has it).
type verifiedOpener interface {
	OpenVerified(d digest.Digest) (io.ReadCloser, cache.BlobInfo, error)
}

// Open implements archive.BlobSource. Content is read through
// OpenVerified where the store has it, so a blob damaged on disk is
// dropped from the cache when an export or a walk reads it.
func (s Source) Open(d digest.Digest) (io.ReadCloser, int64, error) {
	var rc io.ReadCloser
	var info cache.BlobInfo
	var err error
	if vo, ok := s.Store.(verifiedOpener); ok {
		rc, info, err = vo.OpenVerified(d)
	} else {
		rc, info, err = s.Store.Open(d)
	}
	if errors.Is(err, cache.ErrNotFound) {
		return nil, 0, fmt.Errorf("%w: %w", fs.ErrNotExist, err)
	}
	if err != nil {
		return nil, 0, err
	}
	return rc, info.Size, nil
}

// DropStagingPins removes the staging pins (see CutPinning) a store holds.
// Each belongs to a run of a client against the server that had the data
// dir: when the data dir is opened none runs, so any found was left by a
// run killed midway, and would keep its digests from eviction for good.
func DropStagingPins(s Store, log *slog.Logger) error {
	var left []string
	if err := s.Pins(func(name string, _ []digest.Digest) error {
		if _, ok := CutPinning(name); ok {
			left = append(left, name)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, name := range left {
		if err := s.DeletePin(name); err != nil && !errors.Is(err, cache.ErrNotFound) {
			return err
		}
		log.Warn("removed the staging pin of a pin sent in parts whose run did not finish", "pin", name)
	}
	return nil
}
