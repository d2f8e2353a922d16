package airgap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/archive"
	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/eviction"
)

// memSource is an archive.BlobSource in memory.
type memSource map[digest.Digest][]byte

func (m memSource) Open(d digest.Digest) (io.ReadCloser, int64, error) {
	b, ok := m[d]
	if !ok {
		return nil, 0, fmt.Errorf("%w: %s", fs.ErrNotExist, d)
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

// addImage puts a random image's manifest, config and layers into m and
// returns its archive entry.
func (m memSource) addImage(t *testing.T, ref string, layers int) archive.Image {
	t.Helper()
	img, err := random.Image(2048, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := img.RawManifest()
	cfg, _ := img.RawConfigFile()
	m[digest.FromBytes(raw)] = raw
	m[digest.FromBytes(cfg)] = cfg
	ls, _ := img.Layers()
	for _, l := range ls {
		rc, _ := l.Compressed()
		b, _ := io.ReadAll(rc)
		m[digest.FromBytes(b)] = b
	}
	return archive.Image{Ref: ref, Digest: digest.FromBytes(raw), MediaType: string(types.DockerManifestSchema2)}
}

func writeArchive(t *testing.T, src memSource, imgs ...archive.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := archive.Write(context.Background(), &buf, src, imgs, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// evictor records pins as eviction would hold them.
type evictor struct {
	mu     sync.Mutex
	pinned map[string]bool
}

func (e *evictor) EvictNow(context.Context) (eviction.Result, error) { return eviction.Result{}, nil }
func (e *evictor) Stats() eviction.Stats                             { return eviction.Stats{} }
func (e *evictor) SetPinned(key string, pinned bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pinned[key] = pinned
}

func openCache(t *testing.T) (*cache.Store, *admin.Local) {
	t.Helper()
	st, err := cache.Open(cache.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, &admin.Local{Store: st, Evictor: &evictor{pinned: map[string]bool{}}}
}

// state describes a cache's blobs, tags, links and pins, for comparing.
func state(t *testing.T, st *cache.Store) string {
	t.Helper()
	var parts []string
	st.Walk(func(info cache.BlobInfo) error {
		parts = append(parts, "blob "+info.Digest.String())
		return nil
	})
	st.Tags(func(registry, repo, tag string, rec cache.TagRecord) error {
		parts = append(parts, "tag "+registry+"/"+repo+":"+tag+"="+rec.Digest.String())
		return nil
	})
	st.Links(func(registry, repo string, d digest.Digest) error {
		parts = append(parts, "link "+registry+"/"+repo+" "+d.String())
		return nil
	})
	st.Pins(func(name string, ds []digest.Digest) error {
		parts = append(parts, fmt.Sprintf("pin %s %v", name, ds))
		return nil
	})
	sort.Strings(parts)
	return strings.Join(parts, "\n")
}

// TestImportTruncatedArchiveChangesNothing: an archive cut anywhere (in a
// blob, in index.json) is refused with a clear message, and the cache's
// blobs, tags, links and pins are as before.
func TestImportTruncatedArchiveChangesNothing(t *testing.T) {
	src := memSource{}
	one := src.addImage(t, "docker.io/org/one:v1", 2)
	two := src.addImage(t, "docker.io/org/two:v1", 3)
	st, local := openCache(t)
	if _, err := Import(t.Context(), bytes.NewReader(writeArchive(t, src, one)), st, local, nil); err != nil {
		t.Fatal(err)
	}
	before := state(t, st)
	raw := writeArchive(t, src, one, two)
	inIndex := bytes.LastIndex(raw, []byte(`"manifests"`)) // index.json comes last
	for _, cut := range []int{len(raw) / 2, inIndex} {
		_, err := Import(t.Context(), bytes.NewReader(raw[:cut]), st, local, nil)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "the cache is as it was") {
			t.Fatalf("archive cut at %d/%d: err %v", cut, len(raw), err)
		}
		if after := state(t, st); after != before {
			t.Fatalf("a refused import changed the cache:\nbefore %s\nafter  %s", before, after)
		}
	}
}

// failingPins fails the pin called name.
type failingPins struct {
	*admin.Local
	name string
}

func (f failingPins) Pin(ctx context.Context, name string, ds []digest.Digest) error {
	if name == f.name {
		return errors.New("disk full")
	}
	return f.Local.Pin(ctx, name, ds)
}

// TestImportRollsBackRecords: when recording fails half way (the second
// image's pin), the first image's tag, links and pin are taken back, a
// tag the import had moved points where it did before, a pin it had
// replaced is restored, and the blobs it added are gone.
func TestImportRollsBackRecords(t *testing.T) {
	src := memSource{}
	old := src.addImage(t, "docker.io/org/one:v1", 1)
	one := src.addImage(t, "docker.io/org/one:v1", 2)
	two := src.addImage(t, "docker.io/org/two:v1", 1)
	st, local := openCache(t)
	if _, err := Import(t.Context(), bytes.NewReader(writeArchive(t, src, old)), st, local, nil); err != nil {
		t.Fatal(err)
	}
	before := state(t, st)
	if !strings.Contains(before, "tag docker.io/org/one:v1="+old.Digest.String()) || !strings.Contains(before, "pin docker.io/org/one:v1") {
		t.Fatalf("first import not recorded:\n%s", before)
	}
	_, err := Import(t.Context(), bytes.NewReader(writeArchive(t, src, one, two)), st, failingPins{local, "docker.io/org/two:v1"}, nil)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("import with a failing pin: %v", err)
	}
	if after := state(t, st); after != before {
		t.Fatalf("a rolled-back import changed the cache:\nbefore %s\nafter  %s", before, after)
	}
	// And without the fault the same archive imports, moving the tag.
	res, err := Import(t.Context(), bytes.NewReader(writeArchive(t, src, one, two)), st, local, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 2 || res.Images[0].Name != "docker.io/org/one:v1" || res.Images[0].Blobs != 4 || !res.Images[0].Tagged {
		t.Fatalf("imported %+v", res.Images)
	}
	if rec, err := st.Tag("docker.io", "org/one", "v1"); err != nil || rec.Digest != one.Digest {
		t.Fatalf("tag after import: %v %v", rec.Digest, err)
	}
}

// TestImportRestoresAMissingFile: a blob whose file went while the cache
// was closed (cleanly, so the next start trusts its index and the record
// stays) is restored from an archive that holds it, not skipped as
// cached.
func TestImportRestoresAMissingFile(t *testing.T) {
	src := memSource{}
	img := src.addImage(t, "docker.io/org/app:v1", 2)
	dir := t.TempDir()
	st, err := cache.Open(cache.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var layer digest.Digest
	for d, b := range src {
		if d != img.Digest {
			layer = d
			if _, err := st.Put(d, "application/octet-stream", b); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "blobs", "sha256", layer.Encoded()[:2], layer.Encoded())); err != nil {
		t.Fatal(err)
	}
	st, err = cache.Open(cache.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Stat(layer); err != nil {
		t.Fatalf("the record went at the start (%v): this test needs it kept", err)
	}
	local := &admin.Local{Store: st, Evictor: &evictor{pinned: map[string]bool{}}}
	if _, err := Import(t.Context(), bytes.NewReader(writeArchive(t, src, img)), st, local, nil); err != nil {
		t.Fatal(err)
	}
	f, _, err := st.Open(layer)
	if err != nil {
		t.Fatalf("after the import, %s: %v", layer, err)
	}
	f.Close()
}
