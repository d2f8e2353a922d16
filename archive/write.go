package archive

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// Image names one image to export.
type Image struct {
	// Ref is the full reference as the user names it, e.g.
	// "docker.io/library/alpine:3.20" or "...@sha256:...". It becomes the
	// image's ref.name annotation; empty means no annotation.
	Ref string
	// Digest is the top-level manifest or index digest (sha256).
	Digest digest.Digest
	// MediaType is the top-level media type; empty means "read it from the
	// manifest".
	MediaType string
	// Size is the top-level manifest size; 0 means "as the source says".
	Size int64
	// Partial allows an index whose child manifests src partly lacks (the
	// platforms a mirror never pulled): the index is written whole, the
	// children src has are written with their graphs, and the index.json
	// entry is annotated AnnotationPartial = "true" if any child was left
	// out, so that Read accepts it. Default false: a missing child is
	// ErrIncomplete.
	Partial bool
}

// WriteStats reports what Write wrote.
type WriteStats struct {
	Images    int   // entries in index.json
	Blobs     int   // distinct blobs written (shared ones count once)
	Bytes     int64 // archive bytes written to w
	BlobBytes int64 // sum of the sizes of the blobs written, each once
}

// layoutFile is the content of the oci-layout entry.
const layoutFile = `{"imageLayoutVersion":"1.0.0"}`

// epoch is the modification time of every entry, so that equal input gives
// equal archives.
var epoch = time.Unix(0, 0).UTC()

// Write streams an OCI image layout archive of imgs to w.
//
// It first walks every image's graph through src and opens (then closes)
// every blob, so a missing blob fails Write with ErrIncomplete naming it
// before any byte is written; a missing foreign layer is left out silently.
// Then it writes each blob exactly once (shared layers once), verifying its
// digest as it streams, and finally oci-layout and index.json, which holds
// one entry per image annotated with AnnotationRefName = Ref.
//
// On error the bytes already written to w are not a valid archive: the
// caller discards them. progress (may be nil) is called with the number of
// archive bytes written so far, after every write to w.
func Write(ctx context.Context, w io.Writer, src BlobSource, imgs []Image, progress func(written int64)) (WriteStats, error) {
	var stats WriteStats
	if len(imgs) == 0 {
		return stats, errors.New("archive: no images to write")
	}
	blobs, index, err := plan(ctx, src, imgs)
	if err != nil {
		return stats, err
	}

	cw := &countingWriter{w: w, progress: progress}
	tw := tar.NewWriter(cw)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return stats, fmt.Errorf("archive: writing %s: %w", dir, err)
		}
	}
	for _, b := range blobs {
		if err := writeBlob(ctx, tw, src, b); err != nil {
			stats.Bytes = cw.n
			return stats, err
		}
		stats.Blobs++
		stats.BlobBytes += b.Size
	}
	indexJSON, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: index})
	if err != nil {
		return stats, fmt.Errorf("archive: encoding index.json: %w", err)
	}
	if err := writeFile(tw, "oci-layout", []byte(layoutFile)); err != nil {
		return stats, err
	}
	if err := writeFile(tw, "index.json", indexJSON); err != nil {
		return stats, err
	}
	if err := tw.Close(); err != nil {
		return stats, fmt.Errorf("archive: finishing tar: %w", err)
	}
	stats.Images = len(index)
	stats.Bytes = cw.n
	return stats, nil
}

// plan walks every image and returns the distinct blobs to write (in walk
// order, sizes as the source reports them) and the index.json entries.
func plan(ctx context.Context, src BlobSource, imgs []Image) ([]v1.Descriptor, []v1.Descriptor, error) {
	var (
		blobs []v1.Descriptor
		index []v1.Descriptor
		seen  = make(map[digest.Digest]bool)
		refs  = make(map[string]bool)
	)
	for _, img := range imgs {
		if img.Ref != "" {
			if refs[img.Ref] {
				return nil, nil, fmt.Errorf("archive: reference %q given twice", img.Ref)
			}
			refs[img.Ref] = true
		}
		var root *v1.Descriptor
		walkFn, partial := Walk, false
		if img.Partial {
			walkFn = func(ctx context.Context, src BlobSource, root digest.Digest, mediaType string, fn func(v1.Descriptor) error) error {
				return WalkCached(ctx, src, root, mediaType, fn, func(v1.Descriptor) { partial = true })
			}
		}
		err := walkFn(ctx, src, img.Digest, img.MediaType, func(desc v1.Descriptor) error {
			if root == nil {
				r := desc
				root = &r
			}
			d, _ := descDigest(desc) // Walk validated it
			if seen[d] {
				return nil
			}
			if !isKnownManifest(desc.MediaType) {
				// A config or layer: Walk has not opened it; make sure it is there.
				size, err := probe(src, d)
				if errors.Is(err, fs.ErrNotExist) {
					if Foreign(desc) {
						return nil
					}
					return fmt.Errorf("%w: blob %s (%s) is missing", ErrIncomplete, d, desc.MediaType)
				}
				if err != nil {
					return fmt.Errorf("archive: opening blob %s: %w", d, err)
				}
				if size != desc.Size {
					return fmt.Errorf("%w: blob %s: size %d, descriptor says %d", ErrCorrupt, d, size, desc.Size)
				}
			}
			seen[d] = true
			blobs = append(blobs, desc)
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("image %q: %w", img.Ref, err)
		}
		if img.Size != 0 && img.Size != root.Size {
			return nil, nil, fmt.Errorf("%w: image %q: manifest %s is %d bytes, expected %d", ErrCorrupt, img.Ref, img.Digest, root.Size, img.Size)
		}
		entry := v1.Descriptor{MediaType: root.MediaType, Digest: root.Digest, Size: root.Size}
		if img.Ref != "" || partial {
			entry.Annotations = map[string]string{}
		}
		if img.Ref != "" {
			entry.Annotations[AnnotationRefName] = img.Ref
		}
		if partial {
			entry.Annotations[AnnotationPartial] = "true"
		}
		index = append(index, entry)
	}
	return blobs, index, nil
}

// probe tells whether src has d, and its size.
func probe(src BlobSource, d digest.Digest) (int64, error) {
	rc, size, err := src.Open(d)
	if err != nil {
		return 0, err
	}
	return size, rc.Close()
}

func writeBlob(ctx context.Context, tw *tar.Writer, src BlobSource, desc v1.Descriptor) error {
	d, _ := descDigest(desc)
	rc, size, err := src.Open(d)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: blob %s disappeared during export", ErrIncomplete, d)
		}
		return fmt.Errorf("archive: opening blob %s: %w", d, err)
	}
	defer rc.Close()
	if size != desc.Size {
		return fmt.Errorf("%w: blob %s: size %d, expected %d", ErrCorrupt, d, size, desc.Size)
	}
	name := "blobs/sha256/" + d.Encoded()
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: epoch}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("archive: writing %s: %w", name, err)
	}
	dg := digest.SHA256.Digester()
	n, err := io.CopyN(io.MultiWriter(tw, dg.Hash()), ctxReader{ctx, rc}, size)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: blob %s: source gave %d bytes, expected %d", ErrCorrupt, d, n, size)
		}
		return fmt.Errorf("archive: copying blob %s: %w", d, err)
	}
	if got := dg.Digest(); got != d {
		return fmt.Errorf("%w: blob %s: source content has digest %s", ErrCorrupt, d, got)
	}
	return nil
}

func writeFile(tw *tar.Writer, name string, content []byte) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(content)), Mode: 0o644, ModTime: epoch}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("archive: writing %s: %w", name, err)
	}
	if _, err := tw.Write(content); err != nil {
		return fmt.Errorf("archive: writing %s: %w", name, err)
	}
	return nil
}

// countingWriter counts archive bytes and reports them.
type countingWriter struct {
	w        io.Writer
	n        int64
	progress func(int64)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.progress != nil && n > 0 {
		c.progress(c.n)
	}
	return n, err
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
