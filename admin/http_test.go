package admin

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
)

// TestClientErrorsSayTheirKindOnce: a server's error reaches the command
// as the server said it, matching its sentinel, without repeating it
// ("admin: not in the cache (admin: not in the cache: …)" before).
func TestClientErrorsSayTheirKindOnce(t *testing.T) {
	for _, tc := range []struct {
		body     string
		sentinel error
		want     string
	}{
		{`{"error":"admin: not in the cache: ghcr.io/org/app:v2","kind":"not_cached"}`, ErrNotCached, "admin: not in the cache: ghcr.io/org/app:v2"},
		{`{"error":"admin: no such pin: x","kind":"no_such_pin"}`, ErrNoSuchPin, "admin: no such pin: x"},
		{`{"error":"management requests need the token","kind":"unauthorized"}`, ErrUnauthorized, "admin: not authorized: management requests need the token"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(tc.body))
		}))
		_, err := NewClient(srv.URL, "t").PinRef(t.Context(), "ghcr.io/org/app:v2")
		srv.Close()
		if !errors.Is(err, tc.sentinel) {
			t.Errorf("%s: %v, want errors.Is %v", tc.body, err, tc.sentinel)
			continue
		}
		if err.Error() != tc.want || strings.Count(err.Error(), tc.sentinel.Error()) != 1 {
			t.Errorf("error text %q, want %q", err, tc.want)
		}
	}
}

// TestLargePinInParts: a pin of more digests than one request may carry
// (the proxy reads at most 64 KiB of body, ~880 digests) reaches the
// server in parts and replaces the old pin in one step: a digest both
// list is never unpinned on the way, and a failure midway leaves the old
// pin as it was and no part behind.
func TestLargePinInParts(t *testing.T) {
	l, s, ev := newLocal(t)
	watch := &unpinWatch{fakeEvictor: ev}
	l.Evictor = watch
	const name = "docker.io/library/big:1"
	onlyOld, both := digest.FromString("only old"), digest.FromString("both")
	if err := l.Pin(t.Context(), name, []digest.Digest{onlyOld, both}); err != nil {
		t.Fatal(err)
	}
	want := []digest.Digest{both}
	for i := range 3*pinChunk + 7 {
		want = append(want, digest.FromString(fmt.Sprint("layer ", i)))
	}
	var posts atomic.Int32
	failAt := int32(0) // the post that fails, 0: none
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > 64<<10 {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if r.Method == http.MethodPost && posts.Add(1) == failAt {
			http.Error(w, `{"error":"disk on fire"}`, http.StatusInternalServerError)
			return
		}
		Handler(l, "tok").ServeHTTP(w, r)
	}))
	defer srv.Close()
	c := NewClient(srv.URL, "tok")

	failAt = 3
	if err := c.Pin(t.Context(), name, want); err == nil {
		t.Fatal("a pin whose third part failed succeeded")
	}
	if got := pinsOf(t, s); len(got) != 1 || !slices.Equal(got[name], []digest.Digest{onlyOld, both}) {
		t.Fatalf("after a failed pin in parts the pins are %v, want the old pin alone", got)
	}

	posts.Store(0)
	failAt = 0
	if err := c.Pin(t.Context(), name, want); err != nil {
		t.Fatal(err)
	}
	if n := posts.Load(); n != 5 { // four parts and the move
		t.Errorf("%d pin requests, want 5", n)
	}
	got := pinsOf(t, s)
	slices.Sort(want)
	if len(got) != 1 || !slices.Equal(got[name], want) {
		t.Fatalf("pins after the pin in parts: %d pins, %q has %d digests, want exactly the %d sent", len(got), name, len(got[name]), len(want))
	}
	for _, d := range want {
		if !ev.is(d) {
			t.Fatalf("%s not pinned in eviction", d)
		}
	}
	if ev.is(onlyOld) {
		t.Error("a digest only the old pin listed stayed pinned")
	}
	if watch.unpinned[both.String()] {
		t.Error("a digest both the old and the new pin list was unpinned on the way")
	}
}

type unpinWatch struct {
	*fakeEvictor
	unpinned map[string]bool
}

func (u *unpinWatch) SetPinned(key string, pinned bool) {
	if !pinned {
		if u.unpinned == nil {
			u.unpinned = map[string]bool{}
		}
		u.unpinned[key] = true
	}
	u.fakeEvictor.SetPinned(key, pinned)
}

func pinsOf(t *testing.T, s *cache.Store) map[string][]digest.Digest {
	t.Helper()
	out := map[string][]digest.Digest{}
	if err := s.Pins(func(n string, ds []digest.Digest) error {
		out[n] = slices.Clone(ds)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBlobStreamsHaveNoClientTimeout: reading a cached blob through the
// server (export, push-to) is bounded by its context only, not by the
// client's timeout for management calls (an hour: a layer of many GiB
// pushed over a slow link takes longer). A timeout of 1 ns stands for it.
func TestBlobStreamsHaveNoClientTimeout(t *testing.T) {
	l, s, _ := newLocal(t)
	d, size := put(t, s, ociConfig, map[string]string{"a": "config"})
	srv := httptest.NewServer(Handler(l, "tok"))
	defer srv.Close()
	c := NewClient(srv.URL, "tok")
	c.HTTP.Timeout = time.Nanosecond
	rc, n, err := c.BlobSource(t.Context()).Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil || n != size || digest.FromBytes(b) != d {
		t.Fatalf("read %d bytes (size %d), err %v", len(b), n, err)
	}
}
