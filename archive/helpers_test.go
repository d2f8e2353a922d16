package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"sort"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// memStore is an in-memory BlobSink (and so BlobSource) that verifies what
// it is given, like the cache does.
type memStore struct {
	mu    sync.Mutex
	blobs map[digest.Digest][]byte
	types map[digest.Digest]string
	puts  int
}

var (
	_ BlobSink        = (*memStore)(nil)
	_ MediaTypeSetter = (*memStore)(nil)
)

func newStore() *memStore {
	return &memStore{blobs: make(map[digest.Digest][]byte), types: make(map[digest.Digest]string)}
}

func (s *memStore) Open(d digest.Digest) (io.ReadCloser, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[d]
	if !ok {
		return nil, 0, fmt.Errorf("blob %s: %w", d, fs.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

func (s *memStore) Put(d digest.Digest, size int64, mediaType string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if int64(len(b)) != size || digest.SHA256.FromBytes(b) != d {
		return fmt.Errorf("memStore: content does not match %s/%d", d, size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs[d] = b
	s.types[d] = mediaType
	s.puts++
	return nil
}

func (s *memStore) Has(d digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.blobs[d]
	return ok
}

func (s *memStore) SetMediaType(d digest.Digest, mediaType string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.types[d] = mediaType
	return nil
}

func (s *memStore) add(b []byte, mediaType string) digest.Digest {
	d := digest.SHA256.FromBytes(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs[d] = b
	s.types[d] = mediaType
	return d
}

func (s *memStore) remove(d digest.Digest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.blobs, d)
}

func (s *memStore) digests() []digest.Digest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]digest.Digest, 0, len(s.blobs))
	for d := range s.blobs {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// addImage stores img's manifest, config and layers; it returns the Image
// to export under ref.
func (s *memStore) addImage(t testing.TB, ref string, img v1.Image) Image {
	t.Helper()
	raw, err := img.RawManifest()
	must(t, err)
	mt, err := img.MediaType()
	must(t, err)
	cfg, err := img.RawConfigFile()
	must(t, err)
	m, err := img.Manifest()
	must(t, err)
	s.add(cfg, string(m.Config.MediaType))
	layers, err := img.Layers()
	must(t, err)
	for _, l := range layers {
		rc, err := l.Compressed()
		must(t, err)
		b, err := io.ReadAll(rc)
		must(t, err)
		lmt, err := l.MediaType()
		must(t, err)
		s.add(b, string(lmt))
	}
	d := s.add(raw, string(mt))
	return Image{Ref: ref, Digest: d, MediaType: string(mt), Size: int64(len(raw))}
}

func (s *memStore) addIndex(t testing.TB, ref string, idx v1.ImageIndex) Image {
	t.Helper()
	im, err := idx.IndexManifest()
	must(t, err)
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		must(t, err)
		s.addImage(t, "", img)
	}
	raw, err := idx.RawManifest()
	must(t, err)
	mt, err := idx.MediaType()
	must(t, err)
	d := s.add(raw, string(mt))
	return Image{Ref: ref, Digest: d, MediaType: string(mt), Size: int64(len(raw))}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func src(seed int64) random.Option { return random.WithSource(rand.NewSource(seed)) }

func schema2Image(t testing.TB, seed int64) v1.Image {
	img, err := random.Image(512, 2, src(seed))
	must(t, err)
	return img
}

func ociImage(t testing.TB, seed int64) v1.Image {
	img := mutate.ConfigMediaType(mutate.MediaType(schema2Image(t, seed), types.OCIManifestSchema1), types.OCIConfigJSON)
	return img
}

func multiArch(t testing.TB, seed int64) v1.ImageIndex {
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: ociImage(t, seed), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: ociImage(t, seed+1), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
}

// sharedPair returns two images with one layer in common.
func sharedPair(t testing.TB, seed int64) (v1.Image, v1.Image) {
	l, err := random.Layer(2048, types.DockerLayer, src(seed))
	must(t, err)
	a, err := mutate.AppendLayers(schema2Image(t, seed+1), l)
	must(t, err)
	b, err := mutate.AppendLayers(schema2Image(t, seed+2), l)
	must(t, err)
	return a, b
}

// graph returns the digests of the images' graphs, per Walk over s.
func graph(t testing.TB, s BlobSource, imgs ...Image) map[digest.Digest]v1.Descriptor {
	t.Helper()
	out := make(map[digest.Digest]v1.Descriptor)
	for _, img := range imgs {
		must(t, Walk(t.Context(), s, img.Digest, img.MediaType, func(desc v1.Descriptor) error {
			out[digest.Digest(desc.Digest.String())] = desc
			return nil
		}))
	}
	return out
}

type tarEntry struct {
	name string
	body []byte
	typ  byte // 0 = regular file
}

func buildTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		must(t, tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: typ, Size: int64(len(e.body)), Mode: 0o644}))
		_, err := tw.Write(e.body)
		must(t, err)
	}
	must(t, tw.Close())
	return buf.Bytes()
}

// entriesOf lists an archive's entries (test sizes only).
func entriesOf(t testing.TB, archive []byte) []tarEntry {
	t.Helper()
	var out []tarEntry
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		must(t, err)
		b, err := io.ReadAll(tr)
		must(t, err)
		out = append(out, tarEntry{name: hdr.Name, body: b, typ: hdr.Typeflag})
	}
}
