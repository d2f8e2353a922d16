package airgap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/archive"
	"github.com/regmirror/regmirror/imageref"
)

// Catalog lists a cache's images: its tags and the images pinned by
// digest (admin.Ops has it).
type Catalog interface {
	Images(ctx context.Context) ([]admin.Image, error)
}

// Item is one cached image to write or push, with the bytes its cached
// graph holds.
type Item struct {
	archive.Image
	Bytes int64
	// Missing counts the child manifests of an index that the cache does
	// not hold (platforms never pulled).
	Missing int
}

// Plan resolves refs (or, with all, every cached tag and every image
// pinned by digest) against the cache and checks each graph; skipped
// says, per image left out, why. A mirror often holds only some
// platforms of a multi-platform image: such an index is planned whole
// (archive.Image.Partial), with the children the cache has. An image
// whose own config or layers are not all cached, or an index with none
// of its children, is skipped: no client could pull it.
func Plan(ctx context.Context, cat Catalog, src archive.BlobSource, refs []imageref.Ref, all bool) ([]Item, []string, error) {
	cached, err := cat.Images(ctx)
	if err != nil {
		return nil, nil, err
	}
	byRef := map[string]admin.Image{}
	for _, im := range cached {
		byRef[im.Ref] = im
	}
	var want []archive.Image
	var skipped []string
	if all {
		for _, im := range cached {
			want = append(want, archive.Image{Ref: im.Ref, Digest: im.Digest, MediaType: im.MediaType, Partial: true})
		}
	}
	for _, r := range refs {
		if r.Digest != "" {
			want = append(want, archive.Image{Ref: r.String(), Digest: r.Digest, Partial: true})
			continue
		}
		im, ok := byRef[r.String()]
		if !ok {
			skipped = append(skipped, r.String()+": not cached")
			continue
		}
		want = append(want, archive.Image{Ref: im.Ref, Digest: im.Digest, MediaType: im.MediaType, Partial: true})
	}
	seen := map[string]bool{}
	var out []Item
	for _, img := range want {
		if seen[img.Ref] {
			continue
		}
		seen[img.Ref] = true
		n, missing, err := cachedGraph(ctx, src, img)
		if err != nil {
			skipped = append(skipped, img.Ref+": "+err.Error())
			continue
		}
		out = append(out, Item{Image: img, Bytes: n, Missing: missing})
	}
	return out, skipped, nil
}

// cachedGraph checks that img's graph is complete in src except for index
// children never cached, sums its blob sizes and counts those children.
func cachedGraph(ctx context.Context, src archive.BlobSource, img archive.Image) (int64, int, error) {
	var total int64
	manifests, missing := 0, 0
	err := archive.WalkCached(ctx, src, img.Digest, img.MediaType, func(desc v1.Descriptor) error {
		total += desc.Size
		if desc.MediaType.IsIndex() || desc.MediaType.IsImage() || desc.MediaType == types.OCIManifestSchema1 {
			if desc.MediaType.IsImage() {
				manifests++
			}
			return nil
		}
		rc, _, err := src.Open(digest.Digest(desc.Digest.String()))
		if errors.Is(err, os.ErrNotExist) {
			if archive.Foreign(desc) {
				return nil
			}
			return fmt.Errorf("incomplete in the cache: blob %s (%s) is missing", desc.Digest, desc.MediaType)
		}
		if err != nil {
			return err
		}
		return rc.Close()
	}, func(v1.Descriptor) { missing++ })
	if err != nil {
		return 0, 0, err
	}
	if manifests == 0 && missing > 0 {
		return 0, 0, fmt.Errorf("incomplete in the cache: none of the index's %d platforms is cached", missing)
	}
	return total, missing, nil
}

// WriteArchive writes items to an OCI image layout archive at path,
// streaming from src. It writes to a temporary file beside path and
// renames it into place on success, so that path never holds a partial
// archive.
func WriteArchive(ctx context.Context, path string, src archive.BlobSource, items []Item, prog Progress) (archive.WriteStats, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return archive.WriteStats{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	var total int64
	imgs := make([]archive.Image, len(items))
	for i, it := range items {
		imgs[i] = it.Image
		total += it.Bytes
	}
	pg := orNone(prog)
	b := pg.Bar(fmt.Sprintf("%s (%d images)", filepath.Base(path), len(imgs)))
	b.Grow(total)
	var last int64
	stats, err := archive.Write(ctx, f, src, imgs, func(n int64) { b.Add(n - last); last = n })
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Close()
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		b.Fail()
		pg.Wait()
		return stats, fmt.Errorf("export: %w", err)
	}
	b.Done()
	pg.Wait()
	return stats, nil
}
