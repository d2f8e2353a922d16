package upstream

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// TestFailoverOrder: sources marked out are skipped until their back-off
// ends (a 429's Retry-After, if longer, wins); a 404 does not mark out; a
// source known to serve wrong bytes for a digest is skipped for that
// digest only; with every source out, all are tried.
func TestFailoverOrder(t *testing.T) {
	now := time.Unix(1000, 0)
	mk := func(url string) *Registry {
		r, err := New(Options{Name: "docker.io", URL: url})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	f := NewFailover(mk("http://127.0.0.1:1"), []*Registry{mk("http://127.0.0.1:2"), mk("http://127.0.0.1:3")},
		FailoverOptions{OutageBackoff: time.Minute, Now: func() time.Time { return now }})
	d := digest.FromString("x")
	eq := func(what string, got []int, want ...int) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: order %v, want %v", what, got, want)
		}
	}
	eq("fresh", f.order(""), 0, 1, 2)
	f.failed(0, "x", fmt.Errorf("%w: lacks it", ErrNotFound))
	eq("after a 404", f.order(""), 0, 1, 2)
	f.failed(0, "x", fmt.Errorf("%w: 503", ErrUnavailable))
	eq("mirror 1 out", f.order(""), 1, 2)
	f.failed(1, "x", &RateLimitError{RetryAfter: 10 * time.Minute})
	eq("mirror 2 rate limited", f.order(""), 2)
	if s := f.Sources(); !s[0].Mirror || s[2].Mirror || s[1].OutUntil != now.Add(10*time.Minute) {
		t.Errorf("sources: %+v", s)
	}
	f.failed(2, "x", fmt.Errorf("%w: down", ErrUnavailable))
	eq("all out", f.order(""), 0, 1, 2)
	now = now.Add(2 * time.Minute)
	eq("back-off over for mirror 1 and the url", f.order(""), 0, 2)
	f.answered(1)
	eq("answered", f.order(""), 0, 1, 2)
	f.markBad(0, d)
	eq("bad for d", f.order(d), 1, 2)
	eq("other digests", f.order(digest.FromString("y")), 0, 1, 2)
	if skippable(t.Context(), fmt.Errorf("%w: bad", ErrInvalidName)) || !skippable(t.Context(), errors.New("x")) {
		t.Error("skippable")
	}
}

// TestFailoverRefute: a whole body from offset 0 can be refuted, which
// makes its source the last asked for that digest (and that digest only);
// a resumed body cannot be.
func TestFailoverRefute(t *testing.T) {
	mirror, origin := testupstream.Start(t), testupstream.Start(t)
	img := mirror.PushRandomImage(t, "library/a", "1", 1, 1000)
	origin.Push(t, "library/a", "1", img)
	d := testupstream.LayerDigests(t, img)[0]
	other := testupstream.Digest(t, img)
	f := NewFailover(newReg(t, origin, Options{Name: "docker.io"}), []*Registry{newReg(t, mirror, Options{Name: "docker.io"})}, FailoverOptions{})

	resumed, err := f.GetBlob(t.Context(), "library/a", d, 10)
	if err != nil {
		t.Fatal(err)
	}
	resumed.Body.Close()
	if resumed.Refute != nil {
		t.Fatal("a body from offset 10 can be refuted")
	}
	if fmt.Sprint(f.order(d)) != "[0 1]" {
		t.Fatalf("order before: %v", f.order(d))
	}
	blob, err := f.GetBlob(t.Context(), "library/a", d, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readBlob(t, blob); err != nil {
		t.Fatal(err)
	}
	blob.Refuted()
	if got := fmt.Sprint(f.order(d)); got != "[1]" {
		t.Fatalf("order after the mirror's body was refuted: %v, want the origin only", got)
	}
	if got := fmt.Sprint(f.order(other)); got != "[0 1]" {
		t.Fatalf("order for another digest: %v, want both", got)
	}
}
