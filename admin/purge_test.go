package admin

import (
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
)

// TestPurgeKeepsWhatAnUnreadableGraphMentions: another image whose graph
// cannot be walked (here its manifest's record says
// application/octet-stream, as a start after a crash records a blob found
// without a record) keeps every digest its manifest mentions. Before,
// only its root was kept: purging b:1 deleted the layer a:1 shares with
// it, and a:1 could no longer be pulled (offline: for good).
func TestPurgeKeepsWhatAnUnreadableGraphMentions(t *testing.T) {
	l, s, _ := newLocal(t)
	layer := []byte("shared layer")
	ld := digest.FromBytes(layer)
	if _, err := s.Put(ld, ociLayer, layer); err != nil {
		t.Fatal(err)
	}
	image := func(seed, mediaType string) (manifest, config digest.Digest) {
		cfg, cfgSize := put(t, s, ociConfig, map[string]string{"seed": seed})
		m, _ := put(t, s, mediaType, map[string]any{
			"schemaVersion": 2, "mediaType": ociManifest,
			"config": desc{ociConfig, cfg, cfgSize},
			"layers": []desc{{ociLayer, ld, int64(len(layer))}},
		})
		return m, cfg
	}
	ma, ca := image("a", "application/octet-stream")
	mb, cb := image("b", ociManifest)
	now := time.Now()
	for _, tag := range []struct {
		repo string
		d    digest.Digest
	}{{"library/a", ma}, {"library/b", mb}} {
		if err := s.SetTag("docker.io", tag.repo, "1", cache.TagRecord{Digest: tag.d, MediaType: ociManifest, CheckedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Purge(t.Context(), PurgeRequest{Ref: "docker.io/library/b:1"}); err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]digest.Digest{"the shared layer": ld, "a:1's config": ca, "a:1's manifest": ma} {
		if _, err := s.Stat(d); err != nil {
			t.Errorf("%s was purged with b:1: %v", name, err)
		}
	}
	for name, d := range map[string]digest.Digest{"b:1's config": cb, "b:1's manifest": mb} {
		if _, err := s.Stat(d); err == nil {
			t.Errorf("%s is still cached", name)
		}
	}
}
