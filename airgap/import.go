package airgap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/archive"
	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/imageref"
)

// ImportStore is the cache as an import writes to it: content through the
// cache's own verifying writer, then tag records and repository links.
// *cache.Store has it all.
type ImportStore interface {
	Open(d digest.Digest) (*os.File, cache.BlobInfo, error)
	Stat(d digest.Digest) (cache.BlobInfo, error)
	Create(d digest.Digest, mediaType string) (*cache.Writer, error)
	SetMediaType(d digest.Digest, mediaType string) error
	Delete(d digest.Digest) error
	Tag(registry, repo, tag string) (cache.TagRecord, error)
	SetTag(registry, repo, tag string, rec cache.TagRecord) error
	DeleteTag(registry, repo, tag string) error
	HasLink(registry, repo string, d digest.Digest) (bool, error)
	AddLink(registry, repo string, d digest.Digest) error
	DeleteLink(registry, repo string, d digest.Digest) error
	Pins(fn func(name string, digests []digest.Digest) error) error
}

// ImportPins pins imported images through the cache's management, which
// also tells eviction (*admin.Local has it).
type ImportPins interface {
	Pinner
	Closure(ctx context.Context, root digest.Digest, seen func(info cache.BlobInfo, cached bool)) ([]digest.Digest, error)
}

// Imported is one image an import recorded.
type Imported struct {
	// Name is the pin's name: the image's full reference, or its digest
	// when the archive gives no usable name (then it is not tagged).
	Name   string
	Digest digest.Digest
	// Blobs is how many digests of its graph are pinned.
	Blobs int
	// Tagged: the archive named it with a usable reference.
	Tagged bool
	// MissingChildren counts platforms of a partial index that the
	// archive did not hold.
	MissingChildren int
}

// ImportResult reports an import.
type ImportResult struct {
	Images     []Imported
	Stats      archive.ReadStats
	AddedBytes int64 // of the blobs this import added
}

// ErrRefused wraps every error of an import that was rolled back.
var ErrRefused = errors.New("refused")

// Import reads an OCI image layout archive from r into st, verifying every
// blob as it streams (archive.Read, and the cache's writer again). Tags,
// repository links and pins are written only after the whole archive has
// been read and every image's graph checked. If anything fails, what this
// import added (blobs, tags, links, pins) is undone and the error wraps
// ErrRefused: the cache is left as it was. progress (may be nil) hears the
// archive bytes read so far.
func Import(ctx context.Context, r io.Reader, st ImportStore, pins ImportPins, progress func(read int64)) (ImportResult, error) {
	var res ImportResult
	imgs, added, stats, err := archive.Read(ctx, r, sink{st}, progress)
	res.Stats = stats
	var undo []func() error
	if err == nil {
		res.Images, undo, err = record(ctx, st, pins, imgs)
	}
	if err != nil {
		for i := len(undo) - 1; i >= 0; i-- {
			err = errors.Join(err, undo[i]())
		}
		removed := 0
		for _, d := range added {
			if derr := st.Delete(d); derr == nil {
				removed++
			}
		}
		return ImportResult{Stats: stats}, fmt.Errorf("%w: %w (the %d blobs it had added were removed; the cache is as it was)", ErrRefused, err, removed)
	}
	for _, d := range added {
		if info, err := st.Stat(d); err == nil {
			res.AddedBytes += info.Size
		}
	}
	return res, nil
}

// record tags, links and pins each imported image; undo lists, in order,
// how to take back each step it made.
func record(ctx context.Context, st ImportStore, pins ImportPins, imgs []archive.ImportedImage) (out []Imported, undo []func() error, err error) {
	oldPins := map[string][]digest.Digest{}
	if err := st.Pins(func(name string, ds []digest.Digest) error { oldPins[name] = ds; return nil }); err != nil {
		return nil, nil, err
	}
	now := time.Now()
	for _, img := range imgs {
		mediaType := img.MediaType
		if info, err := st.Stat(img.Digest); err == nil && mediaType == "" {
			mediaType = info.MediaType
		}
		digests, err := pins.Closure(ctx, img.Digest, nil)
		if err != nil {
			return out, undo, err
		}
		im := Imported{Name: img.Digest.String(), Digest: img.Digest, Blobs: len(digests), MissingChildren: img.MissingChildren}
		ref, rerr := imageref.Parse(img.Ref)
		if img.Ref != "" && rerr == nil {
			im.Name, im.Tagged = ref.String(), true
			if ref.Tag != "" && ref.Digest == "" {
				u, err := setTag(st, ref, cache.TagRecord{Digest: img.Digest, MediaType: mediaType, CheckedAt: now})
				if err != nil {
					return out, undo, err
				}
				undo = append(undo, u)
			}
			for _, d := range digests {
				if had, err := st.HasLink(ref.Registry, ref.Repo, d); err != nil || had {
					continue
				}
				if err := st.AddLink(ref.Registry, ref.Repo, d); err != nil {
					return out, undo, err
				}
				undo = append(undo, func() error { return st.DeleteLink(ref.Registry, ref.Repo, d) })
			}
		}
		if err := pins.Pin(ctx, im.Name, digests); err != nil {
			return out, undo, err
		}
		old, had := oldPins[im.Name]
		undo = append(undo, func() error {
			if had {
				return pins.Pin(ctx, im.Name, old)
			}
			return pins.Unpin(ctx, im.Name)
		})
		oldPins[im.Name] = digests
		out = append(out, im)
	}
	return out, undo, nil
}

// setTag records ref's tag and returns how to restore what it replaced.
func setTag(st ImportStore, ref imageref.Ref, rec cache.TagRecord) (func() error, error) {
	old, err := st.Tag(ref.Registry, ref.Repo, ref.Tag)
	had := err == nil
	if err != nil && !errors.Is(err, cache.ErrNotFound) {
		return nil, err
	}
	if err := st.SetTag(ref.Registry, ref.Repo, ref.Tag, rec); err != nil {
		return nil, err
	}
	return func() error {
		if had {
			return st.SetTag(ref.Registry, ref.Repo, ref.Tag, old)
		}
		return st.DeleteTag(ref.Registry, ref.Repo, ref.Tag)
	}, nil
}

// sink stores an archive's blobs in the cache, verified by the cache's
// writer as well as by archive.Read.
type sink struct{ st ImportStore }

var (
	_ archive.BlobSink        = sink{}
	_ archive.MediaTypeSetter = sink{}
)

func (s sink) Open(d digest.Digest) (io.ReadCloser, int64, error) {
	return admin.Source{Store: s.st}.Open(d)
}

// Has opens the file, not only the record: a record whose file went while
// the mirror was stopped (a clean start trusts the index) is dropped by the
// open, and the archive's copy then restores the blob.
func (s sink) Has(d digest.Digest) bool {
	f, _, err := s.st.Open(d)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

func (s sink) Put(d digest.Digest, size int64, mediaType string, r io.Reader) error {
	w, err := s.st.Create(d, mediaType)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Cancel()
		return err
	}
	_, err = w.Commit(size)
	return err
}

func (s sink) SetMediaType(d digest.Digest, mediaType string) error {
	return s.st.SetMediaType(d, mediaType)
}
