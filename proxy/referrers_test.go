package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
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

// TestReferrersKeptOnlyForCachedSubjects: an answer is kept for a subject
// the cache holds, and for no other: a client asking about random digests
// used to add an index record for each, forever and outside the budget.
func TestReferrersKeptOnlyForCachedSubjects(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/" {
			w.Header().Set("Content-Type", mediaTypeOCIIndex)
			w.Write([]byte(`{"schemaVersion":2,"mediaType":"` + mediaTypeOCIIndex + `","manifests":[]}`))
		}
	}))
	defer up.Close()
	s, store, _ := serverInFrontOf(t, up.URL)
	manifest := []byte(`{"schemaVersion":2}`)
	cached := digest.FromBytes(manifest)
	if _, err := store.Put(cached, mediaTypeOCIIndex, manifest); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if code, _, _ := serveFrom(s, "127.0.0.1", "/v2/org/app/referrers/"+digest.FromString(fmt.Sprint(i)).String(), ""); code != 200 {
			t.Fatalf("referrers of a digest not cached: %d", code)
		}
	}
	if code, _, _ := serveFrom(s, "127.0.0.1", "/v2/org/app/referrers/"+cached.String(), ""); code != 200 {
		t.Fatalf("referrers of a cached manifest: %d", code)
	}
	for i := range 20 {
		if _, err := store.Referrers("docker.io", "org/app", digest.FromString(fmt.Sprint(i))); err == nil {
			t.Fatal("an answer about a digest not cached was kept")
		}
	}
	if _, err := store.Referrers("docker.io", "org/app", cached); err != nil {
		t.Errorf("the answer about a cached manifest was not kept: %v", err)
	}
}
