package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	want := append([]digest.Digest{both}, digestsN("layer ", 2000)...)
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

	failAt = 2
	if err := c.Pin(t.Context(), name, want); err == nil {
		t.Fatal("a pin whose second part failed succeeded")
	}
	if got := pinsOf(t, s); len(got) != 1 || !slices.Equal(got[name], []digest.Digest{onlyOld, both}) {
		t.Fatalf("after a failed pin in parts the pins are %v, want the old pin alone", got)
	}

	posts.Store(0)
	failAt = 0
	if err := c.Pin(t.Context(), name, want); err != nil {
		t.Fatal(err)
	}
	if n := posts.Load(); n < 4 { // 148 KB of digests: three parts or more, and the move
		t.Errorf("%d pin requests, want parts and a move", n)
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

	// The steps of a pin in parts change staging pins only.
	if err := c.do(t.Context(), http.MethodPost, PathPrefix+"pins/parts", pinPart{Name: name, Digests: want[:1]}, nil); !errors.Is(err, ErrInvalidRef) {
		t.Errorf("a part added to an image's pin: %v, want ErrInvalidRef", err)
	}
	if err := c.do(t.Context(), http.MethodPost, PathPrefix+"pins/move", pinPart{Name: name, From: "docker.io/library/other:1 (pinning 00)"}, nil); !errors.Is(err, ErrInvalidRef) {
		t.Errorf("another image's staging pin moved onto a pin: %v, want ErrInvalidRef", err)
	}
	// A server whose operations cannot assemble parts says so.
	opsOnly := httptest.NewServer(Handler(struct{ Ops }{l}, "tok"))
	defer opsOnly.Close()
	if err := NewClient(opsOnly.URL, "tok").Pin(t.Context(), name, want); !errors.Is(err, ErrInvalidRef) || !strings.Contains(err.Error(), "one request only") {
		t.Errorf("a pin in parts to a server without them: %v", err)
	}
}

// TestConcurrentPinsInParts: two clients that pin the same image in parts
// at once (their steps interleaved) each assemble their own pin: each
// move puts exactly its client's digests in place (before: one client's
// first part replaced the other's parts, its move removed them, and both
// reported success with digests unpinned).
func TestConcurrentPinsInParts(t *testing.T) {
	l, s, ev := newLocal(t)
	const name = "docker.io/library/big:1"
	// 1000 digests: two parts and a move each.
	order := []string{"a", "b", "a", "a", "b", "b"}
	turn := map[string]chan struct{}{"a": make(chan struct{}), "b": make(chan struct{})}
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			select {
			case <-turn[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]:
				defer func() { done <- struct{}{} }()
			case <-time.After(5 * time.Second):
				http.Error(w, "out of turn", http.StatusInternalServerError)
				return
			}
		}
		OpenHandler(l).ServeHTTP(w, r)
	}))
	defer srv.Close()
	var afterA []digest.Digest // name's digests once A has moved
	go func() {
		for i, who := range order {
			select {
			case turn[who] <- struct{}{}:
			case <-t.Context().Done():
				return
			}
			<-done
			if i == 3 {
				_ = s.Pins(func(n string, ds []digest.Digest) error {
					if n == name {
						afterA = slices.Clone(ds)
					}
					return nil
				})
			}
		}
	}()
	da, db := digestsN("a ", 1000), digestsN("b ", 1000)
	errs := make(chan error, 1)
	go func() { errs <- NewClient(srv.URL, "b").Pin(t.Context(), name, db) }()
	if err := NewClient(srv.URL, "a").Pin(t.Context(), name, da); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	slices.Sort(da)
	slices.Sort(db)
	if !slices.Equal(afterA, da) {
		t.Errorf("after A's move the pin has %d digests, %d of them A's; want A's %d", len(afterA), countIn(afterA, da), len(da))
	}
	got := pinsOf(t, s)
	if len(got) != 1 || !slices.Equal(got[name], db) {
		t.Fatalf("%d pins; %q has %d digests, %d of them B's; want B's %d alone", len(got), name, len(got[name]), countIn(got[name], db), len(db))
	}
	for _, d := range db {
		if !ev.is(d) {
			t.Fatalf("%s not pinned in eviction", d)
		}
	}
}

// TestLargePinToAnOlderServer: a server of an earlier release has no
// endpoints for parts and replaces the pin at each request (it ignores
// fields it does not know). A pin that fits one request goes as one; a
// larger one is refused there (413) and reported, the old pin left whole
// (before: 600 digests went in parts and the pin was emptied, reported
// as pinned).
func TestLargePinToAnOlderServer(t *testing.T) {
	l, s, _ := newLocal(t)
	const name = "docker.io/library/big:1"
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathPrefix+"pins", func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > 64<<10 {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		var req struct {
			Name    string          `json:"name"`
			Digests []digest.Digest `json:"digests,omitempty"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			reply(w, nil, fmt.Errorf("%w: %v", ErrInvalidRef, err))
			return
		}
		reply(w, struct{}{}, l.Pin(r.Context(), req.Name, req.Digests))
	})
	mux.HandleFunc("DELETE "+PathPrefix+"pins", func(w http.ResponseWriter, r *http.Request) {
		reply(w, struct{}{}, l.Unpin(r.Context(), r.URL.Query().Get("name")))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := NewClient(srv.URL, "tok")
	check := func(want []digest.Digest) {
		t.Helper()
		want = slices.Sorted(slices.Values(want))
		got := pinsOf(t, s)
		have := slices.Sorted(slices.Values(got[name]))
		if len(got) != 1 || !slices.Equal(have, want) {
			t.Fatalf("%d pins; %q has %d digests, want %d", len(got), name, len(have), len(want))
		}
	}
	// 600 fit one request; 850 fit the old server's 64 KiB, not the
	// client's bound for one request: sent whole after the parts' 404.
	for _, n := range []int{600, 850} {
		ds := digestsN(fmt.Sprint(n, " "), n)
		if err := c.Pin(t.Context(), name, ds); err != nil {
			t.Fatalf("pin of %d digests: %v", n, err)
		}
		check(ds)
	}
	kept := digestsN("850 ", 850)
	err := c.Pin(t.Context(), name, digestsN("1500 ", 1500))
	if err == nil || !strings.Contains(err.Error(), "413") {
		t.Errorf("pin of 1500 digests: %v, want the server's 413", err)
	}
	check(kept)
}

func digestsN(prefix string, n int) []digest.Digest {
	out := make([]digest.Digest, 0, n)
	for i := range n {
		out = append(out, digest.FromString(fmt.Sprint(prefix, i)))
	}
	return out
}

func countIn(have, want []digest.Digest) int {
	n := 0
	for _, d := range have {
		if slices.Contains(want, d) {
			n++
		}
	}
	return n
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

// TestPinPartsAfterARestart: a server that restarted between two parts of
// a pin dropped the staging pin (DropStagingPins); the next part does not
// create a new one holding only the rest, which the move would then make
// the image's pin. The pin fails and the old one stays.
func TestPinPartsAfterARestart(t *testing.T) {
	l, s, _ := newLocal(t)
	const name = "docker.io/library/big:1"
	old := []digest.Digest{digest.FromString("old")}
	if err := l.Pin(t.Context(), name, old); err != nil {
		t.Fatal(err)
	}
	var parts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Handler(l, "tok").ServeHTTP(w, r)
		if strings.HasSuffix(r.URL.Path, "/pins/parts") && parts.Add(1) == 1 {
			if err := DropStagingPins(s, slog.New(slog.DiscardHandler)); err != nil { // the restart
				t.Error(err)
			}
		}
	}))
	defer srv.Close()
	var ds []digest.Digest
	for i := range 2000 {
		ds = append(ds, digest.FromString(fmt.Sprint("layer ", i)))
	}
	if err := NewClient(srv.URL, "tok").Pin(t.Context(), name, ds); !errors.Is(err, ErrNoSuchPin) {
		t.Fatalf("a pin whose staging pin went between parts: %v, want ErrNoSuchPin", err)
	}
	if got := pinsOf(t, s); len(got) != 1 || !slices.Equal(got[name], old) {
		t.Errorf("pins after it: %v, want the old pin alone", got)
	}
}
