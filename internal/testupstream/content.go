package testupstream

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// remoteOptions are the options the push helpers use: through the token
// server (push scope) with the configured credentials.
func (s *Server) remoteOptions() []remote.Option {
	auth := authn.Anonymous
	if s.opts.user != "" {
		auth = authn.FromConfig(authn.AuthConfig{Username: s.opts.user, Password: s.opts.pass})
	}
	return []remote.Option{remote.WithAuth(auth), remote.WithTransport(s.client), remote.WithJobs(2)}
}

func (s *Server) ref(tb testing.TB, repo, ref string) name.Reference {
	tb.Helper()
	r, err := name.ParseReference(s.Ref(repo, ref), name.Insecure, name.StrictValidation)
	if err != nil {
		tb.Fatalf("testupstream: reference %q: %v", s.Ref(repo, ref), err)
	}
	return r
}

// Digest is a convenience: the digest of a manifest, config or layer.
func Digest(tb testing.TB, x interface{ Digest() (v1.Hash, error) }) digest.Digest {
	tb.Helper()
	h, err := x.Digest()
	if err != nil {
		tb.Fatalf("testupstream: digest: %v", err)
	}
	return digest.Digest(h.String())
}

// RawManifest returns the manifest bytes of an image or index.
func RawManifest(tb testing.TB, x interface{ RawManifest() ([]byte, error) }) []byte {
	tb.Helper()
	b, err := x.RawManifest()
	if err != nil {
		tb.Fatalf("testupstream: raw manifest: %v", err)
	}
	return b
}

// LayerBytes returns the compressed bytes of img's i-th layer.
func LayerBytes(tb testing.TB, img v1.Image, i int) []byte {
	tb.Helper()
	ls, err := img.Layers()
	if err != nil {
		tb.Fatal(err)
	}
	rc, err := ls[i].Compressed()
	if err != nil {
		tb.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// LayerDigests returns the digests of img's layers, in order.
func LayerDigests(tb testing.TB, img v1.Image) []digest.Digest {
	tb.Helper()
	ls, err := img.Layers()
	if err != nil {
		tb.Fatalf("testupstream: layers: %v", err)
	}
	var ds []digest.Digest
	for _, l := range ls {
		ds = append(ds, Digest(tb, l))
	}
	return ds
}

// randomImage builds a schema2 image with layers of layerSize random bytes.
func randomImage(tb testing.TB, layers int, layerSize int64, mt types.MediaType) v1.Image {
	tb.Helper()
	adds := make([]mutate.Addendum, 0, layers)
	for range layers {
		l, err := random.Layer(layerSize, mt)
		if err != nil {
			tb.Fatalf("testupstream: random layer: %v", err)
		}
		adds = append(adds, mutate.Addendum{Layer: l})
	}
	img, err := mutate.Append(empty.Image, adds...)
	if err != nil {
		tb.Fatalf("testupstream: random image: %v", err)
	}
	return img
}

// PushRandomImage pushes a Docker schema2 image of layers random layers of
// about layerSize bytes each (gzipped tar) to repo:tag and returns it.
func (s *Server) PushRandomImage(tb testing.TB, repo, tag string, layers int, layerSize int64) v1.Image {
	tb.Helper()
	img := randomImage(tb, layers, layerSize, types.DockerLayer)
	s.Push(tb, repo, tag, img)
	return img
}

// PushRandomOCIImage pushes an image with OCI media types (manifest, config
// and layers) to repo:tag and returns it.
func (s *Server) PushRandomOCIImage(tb testing.TB, repo, tag string, layers int, layerSize int64) v1.Image {
	tb.Helper()
	img := randomImage(tb, layers, layerSize, types.OCILayer)
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	s.Push(tb, repo, tag, img)
	return img
}

// PushRandomIndex pushes an OCI image index with one random OCI image per
// platform (each child's descriptor and config carry its platform) to
// repo:tag and returns it. The children are pushed by digest first. Its
// content is OCI throughout, so clients that must not convert (skopeo
// --preserve-digests into an OCI layout) can copy it.
func (s *Server) PushRandomIndex(tb testing.TB, repo, tag string, platforms []v1.Platform, layers int, layerSize int64) v1.ImageIndex {
	tb.Helper()
	return s.pushIndex(tb, repo, tag, types.OCIImageIndex, platforms, layers, layerSize)
}

// PushRandomManifestList is PushRandomIndex with Docker media types
// throughout: a manifest list of schema2 images.
func (s *Server) PushRandomManifestList(tb testing.TB, repo, tag string, platforms []v1.Platform, layers int, layerSize int64) v1.ImageIndex {
	tb.Helper()
	return s.pushIndex(tb, repo, tag, types.DockerManifestList, platforms, layers, layerSize)
}

func (s *Server) pushIndex(tb testing.TB, repo, tag string, mt types.MediaType, platforms []v1.Platform, layers int, layerSize int64) v1.ImageIndex {
	tb.Helper()
	var adds []mutate.IndexAddendum
	for _, p := range platforms {
		var img v1.Image
		if mt == types.OCIImageIndex {
			img = randomImage(tb, layers, layerSize, types.OCILayer)
			img = mutate.MediaType(img, types.OCIManifestSchema1)
			img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		} else {
			img = randomImage(tb, layers, layerSize, types.DockerLayer)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			tb.Fatalf("testupstream: config: %v", err)
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture, cf.Variant, cf.OSVersion = p.OS, p.Architecture, p.Variant, p.OSVersion
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			tb.Fatalf("testupstream: config: %v", err)
		}
		p := p
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), mt)
	if err := remote.WriteIndex(s.ref(tb, repo, tag), idx, s.remoteOptions()...); err != nil {
		tb.Fatalf("testupstream: push index %s:%s: %v", repo, tag, err)
	}
	plain := withoutArtifactTypes(tb, idx)
	if err := remote.Put(s.ref(tb, repo, tag), plain, s.remoteOptions()...); err != nil {
		tb.Fatalf("testupstream: push index %s:%s: %v", repo, tag, err)
	}
	return plain
}

// plainIndex is an index whose descriptors carry no artifactType, like the
// indexes Docker Hub serves: go-containerregistry adds the field, and
// clients that predate it (skopeo 1.9) refuse to copy such an index with
// --preserve-digests, since re-encoding it would drop the field.
type plainIndex struct {
	inner    v1.ImageIndex
	manifest *v1.IndexManifest
	raw      []byte
}

func withoutArtifactTypes(tb testing.TB, idx v1.ImageIndex) *plainIndex {
	tb.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		tb.Fatalf("testupstream: index: %v", err)
	}
	im = im.DeepCopy()
	for i := range im.Manifests {
		im.Manifests[i].ArtifactType = ""
	}
	raw, err := json.Marshal(im)
	if err != nil {
		tb.Fatalf("testupstream: index: %v", err)
	}
	return &plainIndex{inner: idx, manifest: im, raw: raw}
}

func (p *plainIndex) MediaType() (types.MediaType, error)         { return p.manifest.MediaType, nil }
func (p *plainIndex) Image(h v1.Hash) (v1.Image, error)           { return p.inner.Image(h) }
func (p *plainIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) { return p.inner.ImageIndex(h) }
func (p *plainIndex) RawManifest() ([]byte, error)                { return p.raw, nil }
func (p *plainIndex) IndexManifest() (*v1.IndexManifest, error)   { return p.manifest, nil }
func (p *plainIndex) Size() (int64, error)                        { return int64(len(p.raw)), nil }
func (p *plainIndex) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(p.raw))
	return h, err
}

// Push pushes img to repo:tag (through the token server, with push scope).
func (s *Server) Push(tb testing.TB, repo, tag string, img v1.Image) {
	tb.Helper()
	if err := remote.Write(s.ref(tb, repo, tag), img, s.remoteOptions()...); err != nil {
		tb.Fatalf("testupstream: push %s:%s: %v", repo, tag, err)
	}
}

// Tag points repo:tag at an already pushed image or index (a manifest PUT),
// e.g. to move a tag between two images.
func (s *Server) Tag(tb testing.TB, repo, tag string, img remote.Taggable) {
	tb.Helper()
	t, err := name.NewTag(s.Ref(repo, tag), name.Insecure)
	if err != nil {
		tb.Fatalf("testupstream: tag: %v", err)
	}
	if err := remote.Tag(t, img, s.remoteOptions()...); err != nil {
		tb.Fatalf("testupstream: tag %s:%s: %v", repo, tag, err)
	}
}

// LargeBlobReader returns the deterministic pseudo-random content of a large
// layer of size bytes (the same seed and size always give the same bytes).
func LargeBlobReader(seed string, size int64) io.Reader {
	var k [32]byte
	binary.LittleEndian.PutUint64(k[:], uint64(size))
	copy(k[8:], seed)
	return io.LimitReader(rand.NewChaCha8(k), size)
}

// PushLargeBlobImage pushes a schema2 image whose single layer is size bytes
// of deterministic pseudo-random data (uncompressed-tar media type, so its
// diff ID is its digest), and returns the image and the layer's digest.
//
// The layer is streamed straight into the registry's blob directory (never
// held in memory: pkg/registry buffers chunked uploads in RAM), then the
// config and manifest are pushed through the token server; the push finds
// the layer present and skips it. 1 GiB takes a few seconds.
func (s *Server) PushLargeBlobImage(tb testing.TB, repo, tag string, size int64) (v1.Image, digest.Digest) {
	tb.Helper()
	h, n, err := s.blobs.putStream(LargeBlobReader(repo+":"+tag, size))
	if err != nil {
		tb.Fatalf("testupstream: store large blob: %v", err)
	}
	l := &fileLayer{path: s.blobs.path(h), h: h, size: n}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		tb.Fatalf("testupstream: large image: %v", err)
	}
	s.Push(tb, repo, tag, img)
	return img, digest.Digest(h.String())
}

// fileLayer is an uncompressed layer backed by a blob file on disk.
type fileLayer struct {
	path string
	h    v1.Hash
	size int64
}

var _ v1.Layer = (*fileLayer)(nil)

func (l *fileLayer) Digest() (v1.Hash, error)             { return l.h, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)             { return l.h, nil }
func (l *fileLayer) Size() (int64, error)                 { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)  { return types.DockerUncompressedLayer, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return os.Open(l.path) }
