package airgap

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/imageref"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// graphOf lists an image's manifest, config and layer digests.
func graphOf(t *testing.T, img v1.Image) []digest.Digest {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return append([]digest.Digest{testupstream.Digest(t, img), digest.Digest(cfg.String())}, testupstream.LayerDigests(t, img)...)
}

// TestPullReadsTheChosenGraph: a pull reads the index, the chosen
// platforms' manifests with their configs and layers, and the cosign
// signature tag's graph, nothing of the other platforms; it pins what it
// knows before each manifest's blobs are fetched; and the digests it
// reports are exactly that graph. (The registry here is a plain one,
// internal/testupstream with its token server, standing in for the
// mirror: a Puller speaks the registry protocol with upstream's client.)
func TestPullReadsTheChosenGraph(t *testing.T) {
	up := testupstream.Start(t)
	plats := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}, {OS: "linux", Architecture: "s390x"}}
	idx := up.PushRandomIndex(t, "library/multi", "latest", plats, 2, 4<<10)
	root := testupstream.Digest(t, idx)
	sig := up.PushRandomOCIImage(t, "library/multi", "sha256-"+root.Encoded()+".sig", 1, 1<<10)

	p, err := NewPuller(Mirror{URL: up.URL(), DefaultRegistry: "docker.io"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var mu sync.Mutex
	var pins [][]digest.Digest
	ref, _ := imageref.Parse("multi:latest")
	got, err := p.Pull(t.Context(), ref, PullOptions{Platforms: plats[:2], Pin: func(_ context.Context, ds []digest.Digest) error {
		mu.Lock()
		defer mu.Unlock()
		pins = append(pins, ds)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []digest.Digest{root}
	im, _ := idx.IndexManifest()
	for _, m := range im.Manifests {
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if m.Platform.Architecture == "s390x" {
			for _, d := range graphOf(t, img) {
				if slices.Contains(got.Digests, d) || up.BlobGETs(d) != 0 || up.Count(http.MethodGet, "/v2/library/multi/manifests/"+d.String()) != 0 {
					t.Errorf("the unchosen platform's %s was read", d)
				}
			}
			continue
		}
		want = append(want, graphOf(t, img)...)
	}
	want = append(want, graphOf(t, sig)...)
	slices.Sort(want)
	have := slices.Clone(got.Digests)
	slices.Sort(have)
	if !slices.Equal(have, want) || got.Root != root {
		t.Fatalf("pulled root %s digests\n%v\nwant %s\n%v", got.Root, have, root, want)
	}
	if len(pins) != 3 { // before each image manifest's blobs: two platforms, the signature
		t.Fatalf("pinned %d times, want 3", len(pins))
	}
	for _, d := range graphOf(t, sig) {
		if !slices.Contains(pins[2], d) {
			t.Errorf("the last pin lacks %s", d)
		}
	}
}

// A mirror address with anything after host[:port] is refused, not
// quietly cut to its host.
func TestNewPullerRefusesAPath(t *testing.T) {
	for _, u := range []string{"http://box:5000/v2", "http://box:5000?x=1", "box:5000"} {
		if _, err := NewPuller(Mirror{URL: u, DefaultRegistry: "docker.io"}); err == nil {
			t.Errorf("NewPuller(%q) accepted it", u)
		}
	}
}

// pinBook is a Pinner that keeps pins in memory.
type pinBook struct {
	mu   sync.Mutex
	pins map[string][]digest.Digest
}

func (b *pinBook) Pin(_ context.Context, name string, ds []digest.Digest) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pins[name] = slices.Clone(ds)
	return nil
}

func (b *pinBook) Unpin(_ context.Context, name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.pins[name]; !ok {
		return admin.ErrNoSuchPin
	}
	delete(b.pins, name)
	return nil
}

// TestPreloadFailureKeepsTheEarlierPin: a preload that fails midway (a
// re-run while upstream serves bad blobs, or is down) leaves the pin of an
// earlier, complete preload of the image as it was, and no pin of its own.
func TestPreloadFailureKeepsTheEarlierPin(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomOCIImage(t, "org/app", "v2", 2, 4<<10)
	p, err := NewPuller(Mirror{URL: up.URL(), DefaultRegistry: "docker.io"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ref, _ := imageref.Parse("org/app:v2")
	book := &pinBook{pins: map[string][]digest.Digest{}}
	preload := func() PreloadResult {
		return Preload(t.Context(), p, PreloadOptions{Refs: []imageref.Ref{ref}, Pins: book, Out: io.Discard})
	}
	if res := preload(); res.OK != 1 {
		t.Fatalf("first preload: %+v", res)
	}
	want := slices.Sorted(slices.Values(graphOf(t, img)))
	if got := slices.Sorted(slices.Values(book.pins[ref.String()])); !slices.Equal(got, want) || len(book.pins) != 1 {
		t.Fatalf("after the first preload: pins %v, want %s pinning %v", book.pins, ref, want)
	}

	up.CorruptBlobs(true)
	if res := preload(); res.Failed != 1 {
		t.Fatalf("second preload, blobs corrupt upstream: %+v, want a failure", res)
	}
	if got := slices.Sorted(slices.Values(book.pins[ref.String()])); !slices.Equal(got, want) || len(book.pins) != 1 {
		t.Fatalf("after the failed preload: pins %v, want %s pinning %v as before", book.pins, ref, want)
	}
}

// cancelOnFirstPin is a pinBook that, like a client of a running server,
// fails once its context is cancelled, and cancels the preload's context
// at the first pin (Ctrl-C while the image downloads).
type cancelOnFirstPin struct {
	pinBook
	cancel context.CancelFunc
	once   sync.Once
}

func (c *cancelOnFirstPin) Pin(ctx context.Context, name string, ds []digest.Digest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := c.pinBook.Pin(ctx, name, ds)
	c.once.Do(c.cancel)
	return err
}

func (c *cancelOnFirstPin) Unpin(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.pinBook.Unpin(ctx, name)
}

// TestInterruptedPreloadLeavesNoPin: a preload interrupted while the image
// downloads (its context cancelled) still removes the pin of the download,
// which would otherwise keep its blobs from eviction.
func TestInterruptedPreloadLeavesNoPin(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomOCIImage(t, "org/app", "v2", 2, 4<<10)
	p, err := NewPuller(Mirror{URL: up.URL(), DefaultRegistry: "docker.io"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ref, _ := imageref.Parse("org/app:v2")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	book := &cancelOnFirstPin{pinBook: pinBook{pins: map[string][]digest.Digest{}}, cancel: cancel}
	if res := Preload(ctx, p, PreloadOptions{Refs: []imageref.Ref{ref}, Pins: book, Out: io.Discard}); res.Failed != 1 {
		t.Fatalf("interrupted preload: %+v, want a failure", res)
	}
	if len(book.pins) != 0 {
		t.Errorf("pins left by the interrupted preload: %v", book.pins)
	}
}
