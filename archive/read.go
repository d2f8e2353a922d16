package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// BlobSink receives verified content (the cache, in production).
//
// It embeds BlobSource: after the stream, Read opens the manifests it
// stored (or found already present) to check every image's graph. Open
// must report a missing blob with an error satisfying
// errors.Is(err, fs.ErrNotExist).
type BlobSink interface {
	BlobSource
	// Put stores a blob read from r. It must verify r's content against d
	// and size and return an error (storing nothing) on a mismatch, and
	// return an error if r returns one. mediaType is the blob's media type
	// when known while streaming (from an index.json read earlier in the
	// stream, or a manifest's own mediaType field), else "".
	Put(d digest.Digest, size int64, mediaType string, r io.Reader) error
	// Has reports whether the blob is already stored.
	Has(d digest.Digest) bool
}

// MediaTypeSetter is an optional interface of a BlobSink. After a
// successful completeness check Read calls SetMediaType for every blob it
// Put whose media type, as the image graphs give it, differs from the one
// passed to Put (typically "" because index.json came after the blob).
type MediaTypeSetter interface {
	SetMediaType(d digest.Digest, mediaType string) error
}

// ImportedImage is one entry of an archive's index.json.
type ImportedImage struct {
	// Ref is the image's name: the io.containerd.image.name annotation if
	// set (Docker's `docker save` puts the full name there and only the tag
	// in ref.name), else the ref.name annotation; may be "".
	Ref       string
	Digest    digest.Digest
	MediaType string
	// MissingChildren counts the child manifests of a partial index
	// (AnnotationPartial) that the archive and the sink both lack.
	MissingChildren int
}

// ReadStats reports what Read did.
type ReadStats struct {
	Images          int   // entries in index.json
	Blobs           int   // blobs Put
	SkippedExisting int   // blob entries skipped because the sink had them
	Bytes           int64 // archive bytes read from r (compressed, if it was)
}

// Read imports an OCI image layout archive from r: a tar stream, optionally
// gzip-compressed, read once, in order.
//
// Each blob entry (blobs/sha256/<hex>) the sink lacks is Put as it streams,
// through a reader that hashes it and fails on a digest or size mismatch,
// so Read rejects bad content even if the sink does not. index.json and
// oci-layout may appear anywhere. A malformed entry name (path traversal, a
// blob name that is not 64 lowercase hex digits) or a truncated stream is
// ErrCorrupt.
//
// After the stream, Read checks completeness: every image in index.json and
// every descriptor of its graph must be in the archive or already in the
// sink (foreign layers excepted); otherwise the import fails with
// ErrIncomplete naming the blob. The check reads manifests back through the
// sink's Open.
//
// added lists the digests Put, in order, and is returned even with a
// non-nil error, so the caller can remove exactly what this call added.
// progress (may be nil) is called with the archive bytes read so far.
func Read(ctx context.Context, r io.Reader, sink BlobSink, progress func(read int64)) (imgs []ImportedImage, added []digest.Digest, stats ReadStats, err error) {
	cr := &countingReader{r: r, progress: progress}
	defer func() { stats.Bytes = cr.n }()
	br := bufio.NewReaderSize(cr, 64<<10)
	var in io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, stats, fmt.Errorf("%w: gzip header: %v", ErrCorrupt, err)
		}
		defer zr.Close()
		in = zr
	}

	rd := reader{ctx: ctx, sink: sink, sizes: make(map[digest.Digest]int64), putType: make(map[digest.Digest]string)}
	err = rd.stream(tar.NewReader(ctxReader{ctx, in}))
	added = rd.added
	stats.Blobs = len(rd.added)
	stats.SkippedExisting = rd.skipped
	if err != nil {
		return nil, added, stats, err
	}
	imgs, err = rd.check()
	stats.Images = len(imgs)
	return imgs, added, stats, err
}

type reader struct {
	ctx  context.Context
	sink BlobSink

	index      *v1.IndexManifest
	indexTypes map[digest.Digest]string // the media types index.json gives its manifests
	layout     bool
	dockerSave bool // manifest.json seen: a `docker save` tarball

	sizes   map[digest.Digest]int64  // every blob entry seen: tar size
	putType map[digest.Digest]string // media type given to Put
	added   []digest.Digest
	skipped int
	buf     []byte // reused for small blobs
}

func (rd *reader) stream(tr *tar.Reader) error {
	for {
		if err := rd.ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return corrupt("reading tar header", err)
		}
		if err := rd.entry(tr, hdr); err != nil {
			return err
		}
	}
}

func (rd *reader) entry(tr *tar.Reader, hdr *tar.Header) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	regular := hdr.Typeflag == tar.TypeReg || hdr.Typeflag == '\x00' // '\x00' is the old TypeRegA
	switch {
	case name == "" || (hdr.Typeflag == tar.TypeDir && (name == "blobs" || name == "blobs/sha256")):
		return nil
	case name == "oci-layout" || name == "index.json":
		if !regular {
			return fmt.Errorf("%w: entry %q is not a regular file", ErrCorrupt, hdr.Name)
		}
		return rd.small(tr, hdr, name)
	case strings.HasPrefix(name, "blobs/"):
		d, err := blobName(name)
		if err != nil {
			return err
		}
		if !regular {
			return fmt.Errorf("%w: entry %q is not a regular file", ErrCorrupt, hdr.Name)
		}
		return rd.blob(tr, hdr, d)
	case name == "manifest.json" || name == "repositories":
		rd.dockerSave = true
		return nil
	case dockerLegacy(name):
		// <id>/layer.tar, <id>/json, <id>.json...: the legacy half of a
		// `docker save` tarball. Without index.json, check() rejects it.
		return nil
	}
	return fmt.Errorf("%w: unexpected entry %q (an OCI layout archive holds oci-layout, index.json and blobs/)", ErrCorrupt, hdr.Name)
}

// small reads oci-layout or index.json.
func (rd *reader) small(tr *tar.Reader, hdr *tar.Header, name string) error {
	if hdr.Size > maxManifestSize {
		return fmt.Errorf("%w: %s is %d bytes, over the %d-byte cap", ErrUnsupported, name, hdr.Size, maxManifestSize)
	}
	raw, err := io.ReadAll(tr)
	if err != nil {
		return corrupt(name, err)
	}
	if name == "oci-layout" {
		var l struct {
			Version string `json:"imageLayoutVersion"`
		}
		if err := json.Unmarshal(raw, &l); err != nil {
			return fmt.Errorf("%w: oci-layout: %v", ErrCorrupt, err)
		}
		if !strings.HasPrefix(l.Version, "1.") {
			return fmt.Errorf("%w: oci-layout version %q", ErrUnsupported, l.Version)
		}
		rd.layout = true
		return nil
	}
	if rd.index != nil {
		return fmt.Errorf("%w: index.json appears twice", ErrCorrupt)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(raw, &idx); err != nil {
		return fmt.Errorf("%w: index.json: %v", ErrCorrupt, err)
	}
	rd.index = &idx
	rd.indexTypes = make(map[digest.Digest]string, len(idx.Manifests))
	for _, m := range idx.Manifests {
		if _, seen := rd.indexTypes[digest.Digest(m.Digest.String())]; !seen {
			rd.indexTypes[digest.Digest(m.Digest.String())] = string(m.MediaType)
		}
	}
	return nil
}

func (rd *reader) blob(tr *tar.Reader, hdr *tar.Header, d digest.Digest) error {
	if prev, ok := rd.sizes[d]; ok {
		if prev != hdr.Size {
			return fmt.Errorf("%w: blob %s appears twice with sizes %d and %d", ErrCorrupt, d, prev, hdr.Size)
		}
		return nil // a duplicate entry: the first one was handled
	}
	rd.sizes[d] = hdr.Size
	if rd.sink.Has(d) {
		rd.skipped++
		return nil
	}

	mediaType := rd.knownType(d)
	var src io.Reader = tr
	if mediaType == "" && hdr.Size <= maxManifestSize {
		// Small enough to be a manifest: buffer it to read its mediaType.
		if int64(cap(rd.buf)) < hdr.Size {
			rd.buf = make([]byte, hdr.Size)
		}
		buf := rd.buf[:hdr.Size]
		if _, err := io.ReadFull(tr, buf); err != nil {
			return corrupt(hdr.Name, err)
		}
		mediaType = sniffManifest(buf)
		src = bytes.NewReader(buf)
	}
	v := &verifier{r: ctxReader{rd.ctx, src}, d: d, size: hdr.Size, name: hdr.Name, dg: digest.SHA256.Digester()}
	if err := rd.sink.Put(d, hdr.Size, mediaType, v); err != nil {
		if v.err != nil {
			return v.err
		}
		return fmt.Errorf("archive: storing %s: %w", d, err)
	}
	rd.added = append(rd.added, d)
	rd.putType[d] = mediaType
	if !v.done {
		// The sink stopped early; finish the check ourselves. d is in added,
		// so the caller removes it on error.
		if _, err := io.Copy(io.Discard, v); err != nil {
			return err
		}
	}
	return nil
}

// knownType is d's media type if index.json has been read and names it
// (the first entry that does, if several do).
func (rd *reader) knownType(d digest.Digest) string {
	return rd.indexTypes[d]
}

// check runs after the stream: index.json and oci-layout exist, and every
// image's graph is present.
func (rd *reader) check() ([]ImportedImage, error) {
	if rd.index == nil {
		if rd.dockerSave {
			return nil, fmt.Errorf("%w: this is a `docker save` archive (manifest.json, no index.json); docker save archives are not supported yet, convert with `skopeo copy docker-archive:IN.tar oci-archive:OUT.tar:REF`", ErrUnsupported)
		}
		return nil, fmt.Errorf("%w: no index.json in the archive (truncated?)", ErrIncomplete)
	}
	if !rd.layout {
		return nil, fmt.Errorf("%w: no oci-layout in the archive (truncated?)", ErrIncomplete)
	}
	fix := make(map[digest.Digest]string)
	imgs := make([]ImportedImage, 0, len(rd.index.Manifests))
	for _, top := range rd.index.Manifests {
		d, err := descDigest(top)
		if err != nil {
			return nil, fmt.Errorf("index.json: %w", err)
		}
		ref := top.Annotations[annotationContainerdName]
		if ref == "" {
			ref = top.Annotations[AnnotationRefName]
		}
		missing := 0
		walkFn := Walk
		if top.Annotations[AnnotationPartial] == "true" {
			// Written from a mirror that holds only some platforms: a child
			// manifest may be absent; what is present must be complete.
			walkFn = func(ctx context.Context, src BlobSource, root digest.Digest, mediaType string, fn func(v1.Descriptor) error) error {
				return WalkCached(ctx, src, root, mediaType, fn, func(v1.Descriptor) { missing++ })
			}
		}
		err = walkFn(rd.ctx, rd.sink, d, string(top.MediaType), func(desc v1.Descriptor) error {
			dd, _ := descDigest(desc) // Walk validated it
			if dd == d && desc.Size != top.Size {
				return fmt.Errorf("%w: manifest %s is %d bytes, index.json says %d", ErrCorrupt, d, desc.Size, top.Size)
			}
			size, inArchive := rd.sizes[dd]
			if inArchive && size != desc.Size {
				return fmt.Errorf("%w: blob %s is %d bytes in the archive, descriptor says %d", ErrCorrupt, dd, size, desc.Size)
			}
			if !inArchive && !rd.sink.Has(dd) {
				if Foreign(desc) {
					return nil
				}
				return fmt.Errorf("%w: blob %s (%s) is missing", ErrIncomplete, dd, desc.MediaType)
			}
			if mt, ok := rd.putType[dd]; ok && mt != string(desc.MediaType) {
				fix[dd] = string(desc.MediaType)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("image %q (%s): %w", ref, d, err)
		}
		imgs = append(imgs, ImportedImage{Ref: ref, Digest: d, MediaType: string(top.MediaType), MissingChildren: missing})
	}
	if setter, ok := rd.sink.(MediaTypeSetter); ok {
		for _, d := range rd.added { // added order: deterministic
			if mt, ok := fix[d]; ok {
				if err := setter.SetMediaType(d, mt); err != nil {
					return nil, fmt.Errorf("archive: setting media type of %s: %w", d, err)
				}
			}
		}
	}
	return imgs, nil
}

// cleanName strips leading "./" and rejects absolute paths and "..", "."
// or empty components. "" means the archive root itself.
func cleanName(name string) (string, error) {
	n := name
	for strings.HasPrefix(n, "./") {
		n = n[2:]
	}
	n = strings.TrimSuffix(n, "/")
	if n == "" || n == "." {
		return "", nil
	}
	if strings.HasPrefix(n, "/") || strings.Contains(n, "\\") {
		return "", fmt.Errorf("%w: entry name %q is not a relative path", ErrCorrupt, name)
	}
	for _, c := range strings.Split(n, "/") {
		if c == "" || c == "." || c == ".." {
			return "", fmt.Errorf("%w: entry name %q", ErrCorrupt, name)
		}
	}
	return n, nil
}

// blobName parses "blobs/sha256/<hex>".
func blobName(name string) (digest.Digest, error) {
	alg, enc, ok := strings.Cut(strings.TrimPrefix(name, "blobs/"), "/")
	if !ok || strings.Contains(enc, "/") {
		return "", fmt.Errorf("%w: blob entry %q: want blobs/<algorithm>/<hex>", ErrCorrupt, name)
	}
	if alg != "sha256" {
		return "", fmt.Errorf("%w: blob entry %q: only sha256 is supported", ErrUnsupported, name)
	}
	if !isHex64(enc) {
		return "", fmt.Errorf("%w: blob entry %q: not 64 lowercase hex digits", ErrCorrupt, name)
	}
	return digest.NewDigestFromEncoded(digest.SHA256, enc), nil
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// dockerLegacy matches the legacy entries of a `docker save` tarball:
// <64hex>.json and <64hex>[/...].
func dockerLegacy(name string) bool {
	first, _, _ := strings.Cut(name, "/")
	return isHex64(strings.TrimSuffix(first, ".json"))
}

// sniffManifest returns a manifest's own mediaType field if it names a
// manifest type this package knows, else "".
func sniffManifest(b []byte) string {
	if !isJSONObject(b) {
		return ""
	}
	var m struct {
		MediaType string `json:"mediaType"`
	}
	if json.Unmarshal(b, &m) != nil {
		return ""
	}
	if isKnownManifest(types.MediaType(m.MediaType)) {
		return m.MediaType
	}
	return ""
}

// corrupt classifies a read error: a truncated stream is ErrCorrupt; a
// canceled context or an I/O error passes through.
func corrupt(what string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, tar.ErrHeader) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, what, err)
	}
	return fmt.Errorf("archive: %s: %w", what, err)
}

// verifier passes a blob through while hashing it; at the end it returns
// an ErrCorrupt error instead of io.EOF on a size or digest mismatch.
type verifier struct {
	r    io.Reader
	d    digest.Digest
	size int64
	n    int64
	name string
	dg   digest.Digester
	err  error
	done bool
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if v.done {
		return 0, io.EOF
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.dg.Hash().Write(p[:n])
	switch {
	case err == io.EOF:
		if v.n != v.size {
			v.err = fmt.Errorf("%w: %s: %d bytes, expected %d", ErrCorrupt, v.name, v.n, v.size)
		} else if got := v.dg.Digest(); got != v.d {
			v.err = fmt.Errorf("%w: %s: content digest is %s, expected %s", ErrCorrupt, v.name, got, v.d)
		} else {
			v.done = true
			return n, io.EOF
		}
		return n, v.err
	case err != nil:
		v.err = corrupt(v.name, err)
		return n, v.err
	}
	return n, nil
}

// countingReader counts archive bytes and reports them.
type countingReader struct {
	r        io.Reader
	n        int64
	progress func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && n > 0 {
		c.progress(c.n)
	}
	return n, err
}
