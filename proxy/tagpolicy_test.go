package proxy

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testpull"
	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/tagpolicy"
)

// Tag policies ([[tag_policy]]) as the proxy applies them, end to end
// (moved from package main; config parsing stays there).

func ttl(d time.Duration) *time.Duration { return &d }

func mustPolicy(defaultTTL time.Duration, rules ...tagpolicy.Rule) *tagpolicy.Policy {
	p, err := tagpolicy.New(rules, defaultTTL)
	if err != nil {
		panic(err)
	}
	return p
}

// metricValue reads a sample (or a family's sum) from m's /metrics.
func metricValue(t testing.TB, m *testMirror, name string) float64 {
	t.Helper()
	return testpull.Metric(t, m.url, name)
}

// withPolicy configures the three rules (the ghcr one on docker.io's
// org/ so the test upstream serves it) with tag_ttl as the default.
func withPolicy(tagTTL time.Duration) func(*mirrorSetup) {
	return func(c *mirrorSetup) {
		c.TagTTL = tagTTL
		c.TagPolicy = mustPolicy(tagTTL,
			tagpolicy.Rule{Match: "docker.io/library/*:[0-9]*.[0-9]*.[0-9]*", Immutable: true},
			tagpolicy.Rule{Match: "**:latest", TTL: ttl(time.Hour)},
			tagpolicy.Rule{Match: "docker.io/org/**", TTL: ttl(0)},
		)
	}
}

// TestTagPolicyHEADCounts: each rule's upstream HEADs over repeated pulls:
// immutable and a long ttl never ask; ttl 0s asks every time; a tag no rule
// matches follows tag_ttl (here 1ns: every time).
func TestTagPolicyHEADCounts(t *testing.T) {
	up := testupstream.Start(t)
	release := up.PushRandomImage(t, "library/app", "1.2.3", 1, 512)
	up.PushRandomImage(t, "library/app", "latest", 1, 512)
	up.PushRandomImage(t, "org/app", "main", 1, 512)
	up.PushRandomImage(t, "library/app", "edge", 1, 512)
	m := startMirror(t, up, withPolicy(time.Nanosecond))
	cases := []struct {
		repo, tag string
		heads     int // upstream HEADs over 3 more pulls
	}{
		{"library/app", "1.2.3", 0},
		{"library/app", "latest", 0},
		{"org/app", "main", 3},
		{"library/app", "edge", 3},
	}
	for _, c := range cases {
		pullAll(t, m, c.repo+":"+c.tag)
		path := "/v2/" + c.repo + "/manifests/" + c.tag
		before := up.Count(http.MethodHead, path)
		for i := 0; i < 3; i++ {
			pullAll(t, m, c.repo+":"+c.tag)
		}
		if got := up.Count(http.MethodHead, path) - before; got != c.heads {
			t.Errorf("%s:%s: %d upstream HEADs over 3 pulls, want %d", c.repo, c.tag, got, c.heads)
		}
	}

	// An immutable tag that moved upstream is not followed by pulls, and
	// when something reveals the move (here the watch list's revalidation)
	// it is logged and counted, and the cached digest kept.
	moved := up.PushRandomImage(t, "library/app", "1.2.3", 1, 512)
	if got := pullAll(t, m, "library/app:1.2.3"); got != testupstream.Digest(t, release) {
		t.Fatalf("immutable tag followed upstream: %s", got)
	}
	check, err := m.RevalidateTag(context.Background(), "docker.io", "library/app", "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	if check.Moved() || check.Digest != testupstream.Digest(t, release) {
		t.Errorf("revalidating an immutable tag: %+v, upstream now %s", check, testupstream.Digest(t, moved))
	}
	if got := pullAll(t, m, "library/app:1.2.3"); got != testupstream.Digest(t, release) {
		t.Errorf("immutable tag replaced after the move was revealed: %s", got)
	}
	if n := metricValue(t, m, "regmirror_immutable_tag_moved_total"); n != 1 {
		t.Errorf("regmirror_immutable_tag_moved_total = %v, want 1", n)
	}

	// Its manifest evicted, the immutable tag is fetched again by the
	// digest recorded, not by tag: the move is not followed.
	if err := m.store.Delete(testupstream.Digest(t, release)); err != nil {
		t.Fatal(err)
	}
	tagPath := "/v2/library/app/manifests/1.2.3"
	heads, gets := up.Count(http.MethodHead, tagPath), up.Count(http.MethodGet, tagPath)
	if got := pullAll(t, m, "library/app:1.2.3"); got != testupstream.Digest(t, release) {
		t.Errorf("immutable tag after its manifest was evicted: %s, want %s", got, testupstream.Digest(t, release))
	}
	if up.Count(http.MethodHead, tagPath) != heads || up.Count(http.MethodGet, tagPath) != gets {
		t.Error("an immutable tag whose manifest was evicted was asked upstream by tag")
	}
	if n := up.Count(http.MethodGet, "/v2/library/app/manifests/"+testupstream.Digest(t, release).String()); n != 1 {
		t.Errorf("the recorded digest was fetched %d times, want once", n)
	}
}

// TestTagPolicyStaleWhileRevalidate: an expired stale_while_revalidate tag
// is answered from the cache at once, even while upstream does not answer
// at all, and revalidated in the background: a moved tag is seen soon
// after, without a client waiting for it.
func TestTagPolicyStaleWhileRevalidate(t *testing.T) {
	up := testupstream.Start(t)
	first := up.PushRandomImage(t, "library/app", "latest", 1, 512)
	m := startMirror(t, up, func(c *mirrorSetup) {
		c.TagTTL = time.Hour
		c.TagPolicy = mustPolicy(time.Hour, tagpolicy.Rule{Match: "**:latest", TTL: ttl(time.Nanosecond), StaleWhileRevalidate: true})
		// Without the rule a revalidation would wait this long.
		c.RevalidateTimeout = time.Minute
		c.UpstreamTimeout = time.Minute
	})
	pullAll(t, m, "library/app:latest")

	second := up.PushRandomImage(t, "library/app", "latest", 1, 512)
	resp, _ := send(t, http.MethodGet, m.url+"/v2/library/app/manifests/latest")
	if got := digest.Digest(resp.Header.Get("Docker-Content-Digest")); got != testupstream.Digest(t, first) || resp.Header.Get("X-Regmirror-Cache") != "hit" {
		t.Fatalf("expired swr tag: %s (%s), want the cached %s at once", got, resp.Header.Get("X-Regmirror-Cache"), testupstream.Digest(t, first))
	}
	eventually(t, "the background revalidation to record the moved tag", func() bool {
		resp, _ := send(t, http.MethodGet, m.url+"/v2/library/app/manifests/latest")
		return digest.Digest(resp.Header.Get("Docker-Content-Digest")) == testupstream.Digest(t, second)
	})
	pullAll(t, m, "library/app:latest")

	// Upstream now holds every request for a minute: the answer still
	// comes from the cache at once (the client gives up after 10s).
	up.SetLatency(time.Minute)
	defer up.ClearFaults()
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; i < 3; i++ {
		resp, err := client.Get(m.url + "/v2/library/app/manifests/latest")
		if err != nil {
			t.Fatalf("pull %d while upstream stalls: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || digest.Digest(resp.Header.Get("Docker-Content-Digest")) != testupstream.Digest(t, second) {
			t.Fatalf("pull %d while upstream stalls: %d %s", i, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
		}
	}
}
