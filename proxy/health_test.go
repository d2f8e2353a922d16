package proxy

import (
	"testing"
	"time"

	"github.com/regmirror/regmirror/upstream"
)

func TestUpstreamHealth(t *testing.T) {
	var h upstreamHealth
	now := time.Unix(1000, 0)
	if h.out("docker.io", now) {
		t.Fatal("a registry never seen is out")
	}
	h.failed("docker.io", upstream.ErrUnavailable, now, 30*time.Second)
	if !h.out("docker.io", now.Add(29*time.Second)) || h.out("docker.io", now.Add(31*time.Second)) {
		t.Fatal("an outage is not marked for the backoff")
	}
	if h.out("ghcr.io", now) {
		t.Fatal("an outage of one registry marks another")
	}
	// A 429 keeps the registry out for its Retry-After, capped.
	until := h.failed("ghcr.io", &upstream.RateLimitError{RetryAfter: 10 * time.Minute}, now, 30*time.Second)
	if !until.Equal(now.Add(10 * time.Minute)) {
		t.Fatalf("Retry-After ignored: out until %v", until)
	}
	until = h.failed("quay.io", &upstream.RateLimitError{RetryAfter: 48 * time.Hour}, now, 30*time.Second)
	if !until.Equal(now.Add(maxOutage)) {
		t.Fatalf("Retry-After not capped: out until %v", until)
	}
	// A shorter failure does not cut a longer mark short; an answer clears it.
	h.failed("ghcr.io", upstream.ErrUnavailable, now, time.Second)
	if !h.out("ghcr.io", now.Add(5*time.Minute)) {
		t.Fatal("a later short outage shortened the mark")
	}
	h.answered("ghcr.io")
	if h.out("ghcr.io", now) {
		t.Fatal("an answer did not clear the mark")
	}
}
