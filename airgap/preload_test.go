package airgap

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

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
