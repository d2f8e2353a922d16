package airgap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/dustin/go-humanize"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/archive"
	"github.com/regmirror/regmirror/imageref"
)

// Target is a registry push-to writes into (upstream.Pusher).
type Target interface {
	// Registry is the target's host[:port], for messages.
	Registry() string
	PutBlob(ctx context.Context, repo string, d digest.Digest, size int64, mediaType string, open func() (io.ReadCloser, error)) error
	PutManifest(ctx context.Context, repo, ref, mediaType string, body []byte) error
}

// PushOptions is one push-to run.
type PushOptions struct {
	// DefaultRegistry's images keep their repository on the target
	// (docker.io/library/alpine:3.20 → <target>/library/alpine:3.20);
	// other registries' get the registry as the first path component
	// (ghcr.io/org/app:v1 → <target>/ghcr.io/org/app:v1), the path-prefix
	// form regmirror itself answers.
	DefaultRegistry string
	// Out receives one line per image.
	Out      io.Writer
	Progress Progress
}

// PushResult sums up a push-to.
type PushResult struct {
	OK, Failed int
	Blobs      int   // blobs and manifests written (or found present)
	Bytes      int64 // of the images' graphs
}

// ErrPartialIndex is an index push-to cannot write: the cache lacks some
// of its platforms.
var ErrPartialIndex = errors.New("partially cached index")

// Push copies items (from Plan) out of src into t, one image after
// another: its config and layers, then its child manifests by digest,
// then its top-level manifest under its tag (or digest), every one byte
// for byte as cached, so the target serves the same digests. Blobs the
// target already has are not sent again. An index of which the cache
// holds only some platforms is refused before anything is sent:
// registries (distribution, go-containerregistry's) refuse an index whose
// child manifests they lack, and writing a different index would change
// the digest; preload it with every platform first. An image that fails
// is reported; the others go on.
func Push(ctx context.Context, src archive.BlobSource, items []Item, t Target, o PushOptions) PushResult {
	pg := orNone(o.Progress)
	bars := make([]Bar, len(items))
	for i, it := range items {
		bars[i] = pg.Bar(it.Ref)
		bars[i].Grow(it.Bytes)
	}
	var res PushResult
	var lines []string
	for i, it := range items {
		dest, n, err := pushImage(ctx, src, it, t, o.DefaultRegistry, bars[i])
		if err != nil {
			res.Failed++
			bars[i].Fail()
			lines = append(lines, fmt.Sprintf("FAILED  %s: %v", it.Ref, err))
			continue
		}
		res.OK++
		res.Blobs += n
		res.Bytes += it.Bytes
		bars[i].Done()
		lines = append(lines, fmt.Sprintf("pushed  %s %s to %s: %d blobs and manifests, %s",
			it.Ref, it.Digest, dest, n, humanize.IBytes(uint64(it.Bytes))))
	}
	pg.Wait()
	for _, l := range lines {
		fmt.Fprintln(o.Out, l)
	}
	return res
}

// TargetRepository names ref's repository on a push target.
func TargetRepository(ref imageref.Ref, defaultRegistry string) (string, error) {
	if ref.Registry == defaultRegistry {
		return ref.Repo, nil
	}
	if strings.Contains(ref.Registry, ":") {
		// A repository path component cannot hold a port.
		return "", fmt.Errorf("%s: a registry with a port cannot be a repository path component on the target", ref.Registry)
	}
	return ref.Registry + "/" + ref.Repo, nil
}

// pushImage writes one image; dest names it on the target.
func pushImage(ctx context.Context, src archive.BlobSource, it Item, t Target, defaultRegistry string, bar Bar) (string, int, error) {
	ref, err := imageref.Parse(it.Ref)
	if err != nil {
		return "", 0, err
	}
	repo, err := TargetRepository(ref, defaultRegistry)
	if err != nil {
		return "", 0, err
	}
	if it.Missing > 0 {
		return "", 0, fmt.Errorf("%w: %d platforms of the index are not cached, and a registry refuses an index without its manifests (preload it with --all-platforms first)", ErrPartialIndex, it.Missing)
	}
	var manifests []v1.Descriptor
	n := 0
	err = archive.WalkCached(ctx, src, it.Digest, it.MediaType, func(desc v1.Descriptor) error {
		if desc.MediaType.IsIndex() || desc.MediaType.IsImage() {
			manifests = append(manifests, desc)
			return nil
		}
		d := digest.Digest(desc.Digest.String())
		if archive.Foreign(desc) {
			rc, _, err := src.Open(d)
			if errors.Is(err, fs.ErrNotExist) {
				return nil // non-distributable and never cached
			}
			if err != nil {
				return fmt.Errorf("blob %s: %w", d, err)
			}
			rc.Close()
		}
		err := t.PutBlob(ctx, repo, d, desc.Size, string(desc.MediaType), func() (io.ReadCloser, error) {
			rc, _, err := src.Open(d)
			if err != nil {
				return nil, err
			}
			return &countingReader{rc: rc, bar: bar}, nil
		})
		if err != nil {
			return fmt.Errorf("blob %s: %w", d, err)
		}
		n++
		return nil
	}, nil)
	if err != nil {
		return "", n, err
	}
	// Parents come before children in the walk: write in reverse, so a
	// registry that checks references finds them, the top-level one last.
	for i := len(manifests) - 1; i >= 0; i-- {
		desc := manifests[i]
		d := digest.Digest(desc.Digest.String())
		body, _, err := archive.ReadManifest(src, d, -1) // the walk checked it against its descriptor
		if err != nil {
			return "", n, fmt.Errorf("manifest %s: %w", d, err)
		}
		tag := d.String()
		if i == 0 && ref.Digest == "" {
			tag = ref.Tag
		}
		if err := t.PutManifest(ctx, repo, tag, string(desc.MediaType), body); err != nil {
			return "", n, fmt.Errorf("manifest %s: %w", d, err)
		}
		bar.Add(int64(len(body)))
		n++
	}
	dest := t.Registry() + "/" + repo
	if ref.Digest == "" {
		return dest + ":" + ref.Tag, n, nil
	}
	return dest + "@" + ref.Digest.String(), n, nil
}

// countingReader moves a bar as a blob is sent.
type countingReader struct {
	rc  io.ReadCloser
	bar Bar
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.bar.Add(int64(n))
	return n, err
}

func (c *countingReader) Close() error { return c.rc.Close() }
