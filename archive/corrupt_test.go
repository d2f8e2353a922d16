package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

func TestTruncated(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	archive, _ := writeArchive(t, f)
	// Pre-existing content must survive the roll back.
	existing := f.src.blobs[f.imgs[0].Digest]
	var cuts []int
	for i := 1; i < 10; i++ {
		cuts = append(cuts, len(archive)*i/10)
	}
	// Tar block boundaries: a cut between entries, and inside index.json.
	entries := entriesOf(t, archive)
	indexLen := len(entries[len(entries)-1].body)
	indexAt := len(archive) - 1024 - (indexLen+511)/512*512 - 512 // index.json header
	cuts = append(cuts, 0, 512, 1024, 1536, indexAt, indexAt+100, indexAt+512+10, indexAt+512+indexLen-1)
	for _, cut := range cuts {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			dst := newStore()
			pre := dst.add(existing, string(types.DockerManifestSchema2))
			_, added, _, err := Read(t.Context(), bytes.NewReader(archive[:cut]), dst, nil)
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrIncomplete) {
				t.Fatalf("err = %v, want ErrCorrupt or ErrIncomplete", err)
			}
			if len(dst.blobs) != len(added)+1 {
				t.Fatalf("store holds %d blobs, added lists %d (+1 pre-existing)", len(dst.blobs), len(added))
			}
			for _, d := range added {
				dst.remove(d)
			}
			if got := dst.digests(); len(got) != 1 || got[0] != pre {
				t.Fatalf("after roll back store holds %v", got)
			}
		})
	}
}

// lazySink stores what it reads without checking, and reads only size
// bytes (never sees EOF): Read must catch the mismatch itself.
type lazySink struct{ *memStore }

func (s lazySink) Put(d digest.Digest, size int64, mediaType string, r io.Reader) error {
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	s.add(b, mediaType)
	s.memStore.blobs[d] = b // under the name it claims
	return nil
}

func TestFlippedByte(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	img := f.imgs[0]
	var layer digest.Digest
	for d, desc := range graph(t, f.src, img) {
		if desc.MediaType == types.DockerLayer {
			layer = d
		}
	}
	var buf bytes.Buffer
	_, err := Write(t.Context(), &buf, f.src, []Image{img}, nil)
	must(t, err)
	archive := buf.Bytes()
	body := f.src.blobs[layer]
	at := bytes.Index(archive, body)
	if at < 0 {
		t.Fatal("layer not found in archive")
	}
	archive[at+len(body)/2] ^= 0x40

	t.Run("verifying sink", func(t *testing.T) {
		dst := newStore()
		_, added, _, err := Read(t.Context(), bytes.NewReader(archive), dst, nil)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), layer.Encoded()) {
			t.Fatalf("err = %v, want ErrCorrupt naming %s", err, layer)
		}
		if dst.Has(layer) || len(dst.blobs) != len(added) {
			t.Fatalf("store %d blobs, added %d, has corrupt layer %v", len(dst.blobs), len(added), dst.Has(layer))
		}
	})
	t.Run("lazy sink", func(t *testing.T) {
		dst := lazySink{newStore()}
		_, added, _, err := Read(t.Context(), bytes.NewReader(archive), dst, nil)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
		if len(added) == 0 || added[len(added)-1] != layer {
			t.Fatalf("added %v does not end with the corrupt layer %s", added, layer)
		}
	})
}

func TestBadNames(t *testing.T) {
	t.Parallel()
	hex := strings.Repeat("a", 64)
	for _, tc := range []struct {
		name string
		want error
	}{
		{"blobs/sha256/../../x", ErrCorrupt},
		{"blobs/sha256/../../../etc/passwd", ErrCorrupt},
		{"../index.json", ErrCorrupt},
		{"/etc/passwd", ErrCorrupt},
		{"blobs/sha256/" + strings.ToUpper(hex), ErrCorrupt},
		{"blobs/sha256/abc", ErrCorrupt},
		{"blobs/sha256/" + hex + "/x", ErrCorrupt},
		{"blobs/sha256//" + hex, ErrCorrupt},
		{"blobs/sha256/" + hex[:63] + "g", ErrCorrupt},
		{"blobs/" + hex, ErrCorrupt},
		{"blobs/sha512/" + hex + hex, ErrUnsupported},
		{"notes.txt", ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			archive := buildTar(t, []tarEntry{{name: tc.name, body: []byte("x")}})
			_, _, _, err := Read(t.Context(), bytes.NewReader(archive), newStore(), nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("symlink blob", func(t *testing.T) {
		archive := buildTar(t, []tarEntry{{name: "blobs/sha256/" + hex, typ: '2'}})
		_, _, _, err := Read(t.Context(), bytes.NewReader(archive), newStore(), nil)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
	})
}

// rebuild returns the entries of archive, minus the blob drop, under the
// given prefix.
func rebuild(t testing.TB, archive []byte, drop digest.Digest, prefix string) []byte {
	var out []tarEntry
	for _, e := range entriesOf(t, archive) {
		if drop != "" && e.name == "blobs/sha256/"+drop.Encoded() {
			continue
		}
		e.name = prefix + e.name
		out = append(out, e)
	}
	return buildTar(t, out)
}

func TestMissingBlob(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	archive, _ := writeArchive(t, f)
	for _, mt := range []types.MediaType{types.DockerLayer, types.DockerConfigJSON, types.OCIManifestSchema1, types.OCIImageIndex} {
		t.Run(string(mt), func(t *testing.T) {
			var victim digest.Digest
			for d, desc := range graph(t, f.src, f.imgs...) {
				if desc.MediaType == mt {
					victim = d
					break
				}
			}
			dst := newStore()
			_, added, _, err := Read(t.Context(), bytes.NewReader(rebuild(t, archive, victim, "")), dst, nil)
			if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), victim.String()) {
				t.Fatalf("err = %v, want ErrIncomplete naming %s", err, victim)
			}
			if len(added) != len(dst.blobs) {
				t.Fatalf("added %d, store %d", len(added), len(dst.blobs))
			}
			// Present in the sink already: the same archive imports.
			must(t, dst.Put(victim, int64(len(f.src.blobs[victim])), "", bytes.NewReader(f.src.blobs[victim])))
			_, _, rs, err := Read(t.Context(), bytes.NewReader(rebuild(t, archive, victim, "")), dst, nil)
			must(t, err)
			if rs.Blobs != 0 {
				t.Fatalf("second import put %d blobs", rs.Blobs)
			}
		})
	}
}

func TestLayoutFiles(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	archive, _ := writeArchive(t, f)
	entries := entriesOf(t, archive)
	without := func(name string) []byte {
		var out []tarEntry
		for _, e := range entries {
			if e.name != name {
				out = append(out, e)
			}
		}
		return buildTar(t, out)
	}
	for _, name := range []string{"index.json", "oci-layout"} {
		_, _, _, err := Read(t.Context(), bytes.NewReader(without(name)), newStore(), nil)
		if !errors.Is(err, ErrIncomplete) {
			t.Errorf("without %s: err = %v, want ErrIncomplete", name, err)
		}
	}
	// index.json first, "./" prefixes, Docker 25's legacy entries: fine.
	n := len(entries)
	reordered := append([]tarEntry{entries[n-1], entries[n-2],
		{name: "manifest.json", body: []byte("[]")},
		{name: strings.Repeat("b", 64) + "/layer.tar", typ: '2'},
	}, entries[:n-2]...)
	for i := range reordered {
		reordered[i].name = "./" + reordered[i].name
	}
	dst := newStore()
	imgs, _, _, err := Read(t.Context(), bytes.NewReader(buildTar(t, reordered)), dst, nil)
	must(t, err)
	if len(imgs) != len(f.imgs) {
		t.Fatalf("%d images", len(imgs))
	}
	// With index.json first, top-level media types are known at Put time.
	for _, img := range f.imgs {
		if dst.types[img.Digest] != img.MediaType {
			t.Errorf("%s: media type %q", img.Digest, dst.types[img.Digest])
		}
	}
}

func TestDockerSave(t *testing.T) {
	t.Parallel()
	id := strings.Repeat("c", 64)
	archive := buildTar(t, []tarEntry{
		{name: id + ".json", body: []byte(`{"rootfs":{}}`)},
		{name: id + "/layer.tar", body: []byte("layer")},
		{name: "manifest.json", body: []byte(`[{"Config":"` + id + `.json","RepoTags":["alpine:3.20"],"Layers":["` + id + `/layer.tar"]}]`)},
		{name: "repositories", body: []byte(`{}`)},
	})
	_, _, _, err := Read(t.Context(), bytes.NewReader(archive), newStore(), nil)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "skopeo") {
		t.Fatalf("err = %v, want ErrUnsupported pointing at skopeo", err)
	}
}

func TestCanceled(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	archive, _ := writeArchive(t, f)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, _, err := Read(ctx, bytes.NewReader(archive), newStore(), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Read: err = %v", err)
	}
	if _, err := Write(ctx, io.Discard, f.src, f.imgs, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Write: err = %v", err)
	}
}

// TestPartialIndexLacksOnlyWholePlatforms: a partial index may lack a
// child manifest (a platform never pulled), not part of a child that is
// there. Write refuses an index whose present child lacks a layer, and
// Read refuses an archive whose present child lacks one, each naming the
// layer, rather than counting that child as a platform left out.
func TestPartialIndexLacksOnlyWholePlatforms(t *testing.T) {
	idx := multiArch(t, 7)
	im, err := idx.IndexManifest()
	must(t, err)
	layerOf := func(i int) digest.Digest {
		img, err := idx.Image(im.Manifests[i].Digest)
		must(t, err)
		layers, err := img.Layers()
		must(t, err)
		d, err := layers[0].Digest()
		must(t, err)
		return digest.Digest(d.String())
	}
	arm64 := digest.Digest(im.Manifests[1].Digest.String())

	s := newStore()
	img := s.addIndex(t, "docker.io/library/multi:1", idx)
	img.Partial = true
	s.remove(layerOf(1)) // arm64's manifest is there, one of its layers not
	if _, err := Write(t.Context(), io.Discard, s, []Image{img}, nil); !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), layerOf(1).String()) {
		t.Fatalf("Write, a present child lacking a layer: err = %v, want ErrIncomplete naming %s", err, layerOf(1))
	}

	s = newStore()
	img = s.addIndex(t, "docker.io/library/multi:1", idx)
	img.Partial = true
	s.remove(arm64) // a platform never pulled: fine
	var buf bytes.Buffer
	if _, err := Write(t.Context(), &buf, s, []Image{img}, nil); err != nil {
		t.Fatal(err)
	}
	imgs, _, _, err := Read(t.Context(), bytes.NewReader(buf.Bytes()), newStore(), nil)
	if err != nil || len(imgs) != 1 || imgs[0].MissingChildren != 1 {
		t.Fatalf("Read, one platform left out: %+v, %v; want it read with 1 missing child", imgs, err)
	}
	_, _, _, err = Read(t.Context(), bytes.NewReader(rebuild(t, buf.Bytes(), layerOf(0), "")), newStore(), nil)
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), layerOf(0).String()) {
		t.Fatalf("Read, the present child lacking a layer: err = %v, want ErrIncomplete naming %s", err, layerOf(0))
	}
}
