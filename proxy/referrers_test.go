package proxy

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestReferrersServedFromOwnRecord: an offline mirror, and one whose
// upstream is down, answer a referrers request from the cache's referrers
// record of that subject (not from a tag-list record), filters applied.
func TestReferrersServedFromOwnRecord(t *testing.T) {
	subject := digest.FromString("subject")
	body := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"` +
		digest.FromString("sig").String() + `","artifactType":"application/x-sig"}]}`
	for _, offline := range []bool{true, false} {
		reg := unreachable(t, "docker.io")
		store := tempStore(t)
		s, err := New(Options{Registries: []Upstream{reg}, Store: store, Offline: offline})
		if err != nil {
			t.Fatal(err)
		}
		path := "/v2/org/app/referrers/" + subject.String()
		if code, _, _ := serveFrom(s, "127.0.0.1", path, ""); code == 200 {
			t.Fatalf("offline=%v: 200 with nothing kept", offline)
		}
		if err := store.SetReferrers("docker.io", "org/app", subject, []byte(body)); err != nil {
			t.Fatal(err)
		}
		if code, got, _ := serveFrom(s, "127.0.0.1", path, ""); code != 200 || got != body {
			t.Fatalf("offline=%v: %d %s, want the kept answer", offline, code, got)
		}
		code, got, _ := serveFrom(s, "127.0.0.1", path+"?artifactType=application/x-none", "")
		if code != 200 || strings.Contains(got, "x-sig") {
			t.Fatalf("offline=%v: filtered: %d %s", offline, code, got)
		}
		if code, _, _ := serveFrom(s, "127.0.0.1", "/v2/org/other/referrers/"+subject.String(), ""); code == 200 {
			t.Fatalf("offline=%v: another repository's subject answered", offline)
		}
	}
}
