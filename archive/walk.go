package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/regmirror/regmirror/imageref"
)

// Sentinel errors. Every error of this package that is about the content
// wraps one of them, with details.
var (
	// ErrCorrupt: the data is malformed, truncated or does not match its
	// digest or size.
	ErrCorrupt = errors.New("archive: corrupt")
	// ErrIncomplete: a blob or manifest an image needs is missing.
	ErrIncomplete = errors.New("archive: incomplete")
	// ErrUnsupported: a valid format, algorithm or media type this package
	// does not handle.
	ErrUnsupported = errors.New("archive: unsupported")
)

// AnnotationRefName is the index.json annotation that names an image. Write
// sets it to the full reference; skopeo and crane look images up by it.
const AnnotationRefName = "org.opencontainers.image.ref.name"

// AnnotationPartial marks an index.json entry whose index lacks some child
// manifests on purpose (Image.Partial); Read accepts such an entry with
// those children missing. Other readers see an index with platforms absent.
const AnnotationPartial = "io.github.regmirror.partial"

// annotationContainerdName is set by `docker save` (Docker 25+) and
// containerd to the full reference, where ref.name holds only the tag.
const annotationContainerdName = "io.containerd.image.name"

// maxManifestSize caps what is read into memory: manifests, index.json,
// oci-layout. Registries commonly cap manifests at 4 MiB too.
const maxManifestSize = 4 << 20

// BlobSource opens content by digest (the cache, in production).
//
// Open returns the content and its size. A missing blob is an error for
// which errors.Is(err, fs.ErrNotExist) holds; Write and Walk tell it apart
// from other failures (ErrIncomplete, or silence for an absent foreign
// layer).
type BlobSource interface {
	Open(d digest.Digest) (io.ReadCloser, int64, error)
}

// Foreign reports whether desc is a non-distributable layer (a Windows base
// layer and the like): one with URLs or a "foreign" / "nondistributable"
// media type. Such a layer is exported and imported when the store has it
// and skipped silently when it does not.
func Foreign(desc v1.Descriptor) bool {
	mt := string(desc.MediaType)
	return len(desc.URLs) > 0 || strings.Contains(mt, "foreign") || strings.Contains(mt, "nondistributable")
}

// Walk calls fn for every descriptor of the image graph rooted at root,
// root first, parents before children, each digest once. mediaType is the
// root's media type; if empty it is taken from the manifest's own mediaType
// field (or its shape). The root descriptor passed to fn carries the size
// Open reported.
//
// Walk reads (through src) and verifies manifests only; config and layer
// descriptors are passed to fn without opening them. A missing manifest is
// ErrIncomplete; an unknown manifest-level media type is ErrUnsupported. An
// error from fn stops the walk and is returned unchanged.
func Walk(ctx context.Context, src BlobSource, root digest.Digest, mediaType string, fn func(v1.Descriptor) error) error {
	return walk(ctx, src, root, mediaType, fn, nil)
}

func walk(ctx context.Context, src BlobSource, root digest.Digest, mediaType string, fn func(v1.Descriptor) error, missing func(v1.Descriptor)) error {
	if err := checkDigest(root); err != nil {
		return err
	}
	h, err := v1.NewHash(string(root))
	if err != nil {
		return fmt.Errorf("%w: digest %q: %v", ErrCorrupt, root, err)
	}
	w := walker{ctx: ctx, src: src, fn: fn, seen: make(map[digest.Digest]bool), missingChild: missing}
	return w.visit(v1.Descriptor{Digest: h, MediaType: types.MediaType(mediaType), Size: -1}, true)
}

// WalkCached is Walk for a store that may hold only part of an index: a
// child manifest that src does not have is passed to missing (which may be
// nil) and skipped with its subtree, as a pull of some platforms leaves
// the others. Everything else is as in Walk.
func WalkCached(ctx context.Context, src BlobSource, root digest.Digest, mediaType string, fn func(v1.Descriptor) error, missing func(v1.Descriptor)) error {
	if missing == nil {
		missing = func(v1.Descriptor) {}
	}
	return walk(ctx, src, root, mediaType, fn, missing)
}

type walker struct {
	ctx  context.Context
	src  BlobSource
	fn   func(v1.Descriptor) error
	seen map[digest.Digest]bool
	// missingChild, when set, skips index children src does not have.
	missingChild func(v1.Descriptor)
}

// manifestJSON is the union of the image manifest and index shapes: Walk
// needs only the edges.
type manifestJSON struct {
	SchemaVersion int              `json:"schemaVersion"`
	MediaType     types.MediaType  `json:"mediaType,omitempty"`
	Manifests     []v1.Descriptor  `json:"manifests,omitempty"`
	Config        *v1.Descriptor   `json:"config,omitempty"`
	Layers        []v1.Descriptor  `json:"layers,omitempty"`
	FSLayers      []map[string]any `json:"fsLayers,omitempty"` // schema 1, to reject it clearly
}

// visit handles one descriptor; manifest says whether it is the root or an
// index child (read and descended into) rather than a config or layer.
func (w *walker) visit(desc v1.Descriptor, manifest bool) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	d, err := descDigest(desc)
	if err != nil {
		return err
	}
	if w.seen[d] {
		return nil
	}
	w.seen[d] = true
	if !manifest {
		return w.fn(desc)
	}
	if desc.MediaType.IsSchema1() {
		return fmt.Errorf("%w: manifest %s is Docker schema 1", ErrUnsupported, d)
	}
	if desc.MediaType != "" && !isKnownManifest(desc.MediaType) {
		return fmt.Errorf("%w: manifest %s has media type %q", ErrUnsupported, d, desc.MediaType)
	}
	raw, size, err := ReadManifest(w.src, d, desc.Size)
	if err != nil {
		return err
	}
	desc.Size = size
	var m manifestJSON
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("%w: manifest %s: %v", ErrCorrupt, d, err)
	}
	if desc.MediaType == "" {
		desc.MediaType = sniffType(&m)
	}
	switch {
	case desc.MediaType.IsSchema1() || m.SchemaVersion == 1 || len(m.FSLayers) > 0:
		return fmt.Errorf("%w: manifest %s is Docker schema 1", ErrUnsupported, d)
	case !isKnownManifest(desc.MediaType):
		return fmt.Errorf("%w: manifest %s has media type %q", ErrUnsupported, d, desc.MediaType)
	case m.MediaType != "" && isKnownManifest(m.MediaType) && m.MediaType.IsIndex() != desc.MediaType.IsIndex():
		return fmt.Errorf("%w: manifest %s: descriptor says %q, content says %q", ErrCorrupt, d, desc.MediaType, m.MediaType)
	}
	if err := w.fn(desc); err != nil {
		return err
	}
	if desc.MediaType.IsIndex() {
		for _, child := range m.Manifests {
			err := w.visit(child, true)
			// Only the child manifest's own absence is a platform left out:
			// a child that is there lacking a layer is an incomplete image.
			var missing *missingManifest
			if w.missingChild != nil && errors.As(err, &missing) && missing.d.String() == child.Digest.String() {
				w.missingChild(child)
				continue
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	if m.Config == nil {
		return fmt.Errorf("%w: manifest %s has no config", ErrCorrupt, d)
	}
	if err := w.visit(*m.Config, false); err != nil {
		return err
	}
	for _, l := range m.Layers {
		if err := w.visit(l, false); err != nil {
			return err
		}
	}
	return nil
}

// sniffType names a manifest whose descriptor has no media type: its own
// field first, then its shape (OCI allows leaving mediaType out).
func sniffType(m *manifestJSON) types.MediaType {
	switch {
	case m.MediaType != "":
		return m.MediaType
	case m.Manifests != nil:
		return types.OCIImageIndex
	case m.Config != nil:
		return types.OCIManifestSchema1
	}
	return ""
}

func isKnownManifest(mt types.MediaType) bool {
	switch mt {
	case types.OCIImageIndex, types.DockerManifestList, types.OCIManifestSchema1, types.DockerManifestSchema2:
		return true
	}
	return false
}

// missingManifest is ErrIncomplete for a manifest that is not there, naming
// it, so that a walk tells an index's absent child from a present one with
// something missing below it.
type missingManifest struct{ d digest.Digest }

func (e *missingManifest) Error() string {
	return fmt.Sprintf("%v: manifest %s is missing", ErrIncomplete, e.d)
}

func (e *missingManifest) Unwrap() error { return ErrIncomplete }

// ReadManifest reads and verifies a manifest of at most maxManifestSize
// bytes. wantSize < 0 means unknown.
func ReadManifest(src BlobSource, d digest.Digest, wantSize int64) ([]byte, int64, error) {
	rc, size, err := src.Open(d)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, 0, &missingManifest{d}
		}
		return nil, 0, fmt.Errorf("archive: opening manifest %s: %w", d, err)
	}
	defer rc.Close()
	if wantSize >= 0 && size != wantSize {
		return nil, 0, fmt.Errorf("%w: manifest %s: size %d, descriptor says %d", ErrCorrupt, d, size, wantSize)
	}
	if size > maxManifestSize {
		return nil, 0, fmt.Errorf("%w: manifest %s is %d bytes, over the %d-byte cap", ErrUnsupported, d, size, maxManifestSize)
	}
	raw, err := io.ReadAll(io.LimitReader(rc, maxManifestSize+1))
	if err != nil {
		return nil, 0, fmt.Errorf("archive: reading manifest %s: %w", d, err)
	}
	if int64(len(raw)) != size {
		return nil, 0, fmt.Errorf("%w: manifest %s: read %d bytes, expected %d", ErrCorrupt, d, len(raw), size)
	}
	if got := digest.SHA256.FromBytes(raw); got != d {
		return nil, 0, fmt.Errorf("%w: manifest %s: content digest is %s", ErrCorrupt, d, got)
	}
	return raw, size, nil
}

// checkDigest accepts a well-formed sha256 digest only: blob paths are
// built from it.
func checkDigest(d digest.Digest) error {
	err := imageref.CheckDigest(d)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, imageref.ErrUnsupportedDigest):
		return fmt.Errorf("%w: digest %q: only sha256 is supported", ErrUnsupported, d)
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

func descDigest(desc v1.Descriptor) (digest.Digest, error) {
	d := digest.Digest(desc.Digest.String())
	if err := checkDigest(d); err != nil {
		return "", err
	}
	return d, nil
}

// isJSONObject is a cheap test before trying to parse a blob as a manifest.
func isJSONObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}
