package archive

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// fixture is a source store holding four images: Docker schema 2, OCI, a
// two-platform OCI index and a pair sharing a layer.
type fixture struct {
	src  *memStore
	imgs []Image
}

func newFixture(t testing.TB) fixture {
	s := newStore()
	a, b := sharedPair(t, 40)
	imgs := []Image{
		s.addImage(t, "docker.io/library/alpine:3.20", schema2Image(t, 10)),
		s.addImage(t, "ghcr.io/org/oci:v1", ociImage(t, 20)),
		s.addIndex(t, "docker.io/library/multi:latest", multiArch(t, 30)),
		s.addImage(t, "registry.example.com:5000/team/a:1", a),
		s.addImage(t, "registry.example.com:5000/team/b@sha256:"+strings.Repeat("ab", 32), b),
	}
	return fixture{src: s, imgs: imgs}
}

func writeArchive(t testing.TB, f fixture) ([]byte, WriteStats) {
	t.Helper()
	var buf bytes.Buffer
	var last int64
	stats, err := Write(t.Context(), &buf, f.src, f.imgs, func(n int64) { last = n })
	must(t, err)
	if last != int64(buf.Len()) || stats.Bytes != int64(buf.Len()) {
		t.Fatalf("progress %d, stats.Bytes %d, archive %d bytes", last, stats.Bytes, buf.Len())
	}
	return buf.Bytes(), stats
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	archive, ws := writeArchive(t, f)

	want := graph(t, f.src, f.imgs...)
	var wantBytes int64
	for _, d := range want {
		wantBytes += d.Size
	}
	if ws.Images != len(f.imgs) || ws.Blobs != len(want) || ws.BlobBytes != wantBytes {
		t.Errorf("WriteStats = %+v, want %d images, %d blobs, %d blob bytes", ws, len(f.imgs), len(want), wantBytes)
	}
	// Every blob appears exactly once; oci-layout and index.json come last.
	entries := entriesOf(t, archive)
	count := make(map[string]int)
	for _, e := range entries {
		count[e.name]++
	}
	for d := range want {
		if n := count["blobs/sha256/"+d.Encoded()]; n != 1 {
			t.Errorf("blob %s written %d times", d, n)
		}
	}
	if n := len(entries); entries[n-2].name != "oci-layout" || entries[n-1].name != "index.json" {
		t.Errorf("last entries %q, %q", entries[n-2].name, entries[n-1].name)
	}

	dst := newStore()
	var last int64
	imgs, added, rs, err := Read(t.Context(), bytes.NewReader(archive), dst, func(n int64) { last = n })
	must(t, err)
	if rs.Images != len(f.imgs) || rs.Blobs != len(want) || rs.SkippedExisting != 0 || rs.Bytes != last || rs.Bytes == 0 {
		t.Errorf("ReadStats = %+v (last progress %d), want %d images, %d blobs", rs, last, len(f.imgs), len(want))
	}
	if len(added) != len(want) {
		t.Errorf("added %d digests, want %d", len(added), len(want))
	}
	for i, img := range imgs {
		if img.Ref != f.imgs[i].Ref || img.Digest != f.imgs[i].Digest || img.MediaType != f.imgs[i].MediaType {
			t.Errorf("image %d = %+v, want %+v", i, img, f.imgs[i])
		}
	}
	for d, desc := range want {
		got, ok := dst.blobs[d]
		if !ok || !bytes.Equal(got, f.src.blobs[d]) {
			t.Errorf("blob %s not imported intact", d)
		}
		// Media types reach the sink: sniffed while streaming or set after.
		if dst.types[d] != string(desc.MediaType) {
			t.Errorf("blob %s media type %q, want %q", d, dst.types[d], desc.MediaType)
		}
	}

	// Importing again adds nothing.
	_, added, rs, err = Read(t.Context(), bytes.NewReader(archive), dst, nil)
	must(t, err)
	if len(added) != 0 || rs.Blobs != 0 || rs.SkippedExisting != len(want) {
		t.Errorf("second import: added %d, stats %+v", len(added), rs)
	}

	// Same input, same bytes.
	again, _ := writeArchive(t, f)
	if !bytes.Equal(again, archive) {
		t.Error("Write is not deterministic")
	}
}

func TestSharedLayerStoredOnce(t *testing.T) {
	t.Parallel()
	s := newStore()
	a, b := sharedPair(t, 1)
	imgs := []Image{s.addImage(t, "x/a:1", a), s.addImage(t, "x/b:1", b)}
	alias := imgs[0]
	alias.Ref = "x/a:latest" // a second name for the same manifest
	imgs = append(imgs, alias)
	var buf bytes.Buffer
	ws, err := Write(t.Context(), &buf, s, imgs, nil)
	must(t, err)
	// 2 manifests + 2 configs + 2 own layers each + 1 shared layer.
	if ws.Blobs != 2+2+4+1 || len(s.blobs) != ws.Blobs {
		t.Fatalf("Blobs = %d, store holds %d", ws.Blobs, len(s.blobs))
	}
	dst := newStore()
	got, added, rs, err := Read(t.Context(), &buf, dst, nil)
	must(t, err)
	if got[2].Ref != "x/a:latest" || got[2].Digest != imgs[0].Digest {
		t.Errorf("alias imported as %+v", got[2])
	}
	if ws.Images != 3 || rs.Images != 3 || rs.Blobs != ws.Blobs || len(added) != ws.Blobs || dst.puts != ws.Blobs {
		t.Fatalf("read %+v, added %d, puts %d", rs, len(added), dst.puts)
	}
}

func TestGzipArchive(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	archive, _ := writeArchive(t, f)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, err := zw.Write(archive)
	must(t, err)
	must(t, zw.Close())
	imgs, _, rs, err := Read(t.Context(), &gz, newStore(), nil)
	must(t, err)
	if len(imgs) != len(f.imgs) || rs.Bytes >= int64(len(archive)) {
		t.Fatalf("imgs %d, stats %+v", len(imgs), rs)
	}
}

func TestWriteErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	t.Run("missing layer", func(t *testing.T) {
		s := newStore()
		img := s.addImage(t, "x/y:1", schema2Image(t, 7))
		var victim digest.Digest
		for d, desc := range graph(t, s, img) {
			if desc.MediaType == types.DockerLayer {
				victim = d
			}
		}
		s.remove(victim)
		var buf bytes.Buffer
		_, err := Write(t.Context(), &buf, s, []Image{img}, nil)
		if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), victim.String()) {
			t.Fatalf("err = %v, want ErrIncomplete naming %s", err, victim)
		}
		if buf.Len() != 0 {
			t.Errorf("%d bytes written before the error", buf.Len())
		}
	})
	t.Run("missing child manifest", func(t *testing.T) {
		s := newStore()
		img := s.addIndex(t, "x/y:1", multiArch(t, 8))
		var child digest.Digest
		for d, desc := range graph(t, s, img) {
			if desc.MediaType == types.OCIManifestSchema1 {
				child = d
			}
		}
		s.remove(child)
		_, err := Write(t.Context(), &bytes.Buffer{}, s, []Image{img}, nil)
		if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), child.String()) {
			t.Fatalf("err = %v, want ErrIncomplete naming %s", err, child)
		}
	})
	t.Run("corrupt source", func(t *testing.T) {
		s := newStore()
		img := s.addImage(t, "x/y:1", schema2Image(t, 9))
		for d, desc := range graph(t, s, img) {
			if desc.MediaType == types.DockerLayer {
				b := bytes.Clone(s.blobs[d])
				b[len(b)/2] ^= 1
				s.blobs[d] = b
				break
			}
		}
		_, err := Write(t.Context(), &bytes.Buffer{}, s, []Image{img}, nil)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
	})
	t.Run("unknown media type", func(t *testing.T) {
		s := newStore()
		child := s.add([]byte(`{"hello":"world"}`), "application/vnd.example+json")
		idx, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{
			{MediaType: "application/vnd.example+json", Size: 17, Digest: v1.Hash{Algorithm: "sha256", Hex: child.Encoded()}},
		}})
		must(t, err)
		d := s.add(idx, string(types.OCIImageIndex))
		_, err = Write(t.Context(), &bytes.Buffer{}, s, []Image{{Ref: "x/y:1", Digest: d}}, nil)
		if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("err = %v, want ErrUnsupported", err)
		}
	})
	t.Run("duplicate ref", func(t *testing.T) {
		_, err := Write(t.Context(), &bytes.Buffer{}, f.src, []Image{f.imgs[0], f.imgs[0]}, nil)
		if err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("size mismatch", func(t *testing.T) {
		img := f.imgs[0]
		img.Size++
		_, err := Write(t.Context(), &bytes.Buffer{}, f.src, []Image{img}, nil)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
	})
	t.Run("media type sniffed", func(t *testing.T) {
		img := f.imgs[2]
		img.MediaType = ""
		var buf bytes.Buffer
		_, err := Write(t.Context(), &buf, f.src, []Image{img}, nil)
		must(t, err)
		imgs, _, _, err := Read(t.Context(), &buf, newStore(), nil)
		must(t, err)
		if imgs[0].MediaType != string(types.OCIImageIndex) {
			t.Fatalf("media type %q", imgs[0].MediaType)
		}
	})
}

func TestForeignLayer(t *testing.T) {
	t.Parallel()
	foreign, err := random.Layer(256, types.DockerForeignLayer, src(5))
	must(t, err)
	img, err := mutate.Append(schema2Image(t, 6), mutate.Addendum{Layer: foreign, URLs: []string{"https://example.com/layer"}, MediaType: types.DockerForeignLayer})
	must(t, err)
	s := newStore()
	ref := s.addImage(t, "x/win:1", img)
	fd, err := foreign.Digest()
	must(t, err)
	s.remove(digest.Digest(fd.String()))

	var buf bytes.Buffer
	ws, err := Write(t.Context(), &buf, s, []Image{ref}, nil)
	must(t, err)
	if ws.Blobs != len(s.blobs) {
		t.Fatalf("wrote %d blobs, store has %d", ws.Blobs, len(s.blobs))
	}
	dst := newStore()
	_, _, _, err = Read(t.Context(), &buf, dst, nil)
	must(t, err)
	if dst.Has(digest.Digest(fd.String())) {
		t.Fatal("foreign layer appeared from nowhere")
	}
}
