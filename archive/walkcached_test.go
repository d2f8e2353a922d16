package archive

import (
	"context"
	"errors"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
)

func TestWalkCachedSkipsMissingPlatforms(t *testing.T) {
	s := newStore()
	idx := multiArch(t, 7)
	img := s.addIndex(t, "r/x:1", idx)
	im, err := idx.IndexManifest()
	must(t, err)
	gone := digest.Digest(im.Manifests[0].Digest.String())
	s.remove(gone)

	if err := Walk(context.Background(), s, img.Digest, img.MediaType, func(v1.Descriptor) error { return nil }); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Walk over a partial index: %v, want ErrIncomplete", err)
	}
	var seen, missing []string
	err = WalkCached(context.Background(), s, img.Digest, img.MediaType,
		func(d v1.Descriptor) error { seen = append(seen, d.Digest.String()); return nil },
		func(d v1.Descriptor) { missing = append(missing, d.Digest.String()) })
	if err != nil {
		t.Fatalf("WalkCached: %v", err)
	}
	if len(missing) != 1 || missing[0] != gone.String() {
		t.Fatalf("missing = %v, want [%s]", missing, gone)
	}
	for _, d := range seen {
		if d == gone.String() {
			t.Fatal("WalkCached visited the missing child")
		}
	}
	if len(seen) < 4 { // index, the other child, its config and a layer
		t.Fatalf("WalkCached saw only %v", seen)
	}
}
