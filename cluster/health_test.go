package cluster

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestHealthStates: a peer counts only after it answered; an error marks
// it down at once; the next answer brings it back. Self always counts.
func TestHealthStates(t *testing.T) {
	c := &fakeClock{time.Unix(1_800_000_000, 0)}
	h := newHealth("http://a", []string{"http://c", "http://a", "http://b", "http://b"}, c.now)
	if got := h.nodes(); !slices.Equal(got, []string{"http://a"}) {
		t.Fatalf("before any ping: nodes %v, want only self", got)
	}
	if !h.up("http://b") || h.up("http://b") {
		t.Fatal("up: want a change the first time only")
	}
	h.up("http://c")
	if got := h.nodes(); !slices.Equal(got, []string{"http://a", "http://b", "http://c"}) {
		t.Fatalf("nodes %v", got)
	}
	c.t = c.t.Add(time.Minute)
	if !h.down("http://b", errors.New("connection refused")) || h.down("http://b", errors.New("again")) {
		t.Fatal("down: want a change the first time only")
	}
	if got := h.nodes(); !slices.Equal(got, []string{"http://a", "http://c"}) {
		t.Fatalf("after b failed: nodes %v", got)
	}
	st := h.states()
	if st[0].URL != "http://b" || st[0].Up || st[0].Err != "again" || !st[0].Since.Equal(c.t) {
		t.Fatalf("b's state %+v", st[0])
	}
	h.up("http://b")
	if got := h.nodes(); len(got) != 3 {
		t.Fatalf("after b answered again: nodes %v", got)
	}
	if h.down("http://unknown", errors.New("x")) || h.up("http://unknown") {
		t.Fatal("a URL that is not a peer changed state")
	}
}

// TestPingMarksPeers: pings against real HTTP servers: a peer that answers
// 200 to a signed ping is up; one that refuses the signature, answers 503
// or is gone is down; it comes back once it answers.
func TestPingMarksPeers(t *testing.T) {
	secret := []byte("0123456789abcdef0123")
	var ready atomic.Bool
	ready.Store(true)
	check := newSigner(secret, 30*time.Second, time.Now)
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := check.verify(r.Method, r.RequestURI, r.Header.Get(Header)); err != nil || r.URL.Path != PingPath {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer good.Close()
	otherKey := newSigner([]byte("a different key!!!!!"), 30*time.Second, time.Now)
	wrongKey := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if otherKey.verify(r.Method, r.RequestURI, r.Header.Get(Header)) != nil {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer wrongKey.Close()
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()

	n, err := New(Options{Self: "http://127.0.0.1:1", Peers: []string{good.URL, wrongKey.URL, gone.URL}, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	up := func() map[string]bool {
		m := map[string]bool{}
		for _, p := range n.Stats().Peers {
			m[p.URL] = p.Up
		}
		return m
	}
	n.PingAll(context.Background())
	if got := up(); !got[good.URL] || got[wrongKey.URL] || got[gone.URL] {
		t.Fatalf("after a ping: %v", got)
	}
	if owner := n.Owner("sha256:x"); owner != n.Self() && owner != good.URL {
		t.Fatalf("owner %s is neither self nor the healthy peer", owner)
	}
	ready.Store(false)
	n.PingAll(context.Background())
	if up()[good.URL] {
		t.Fatal("a peer answering 503 is still up")
	}
	ready.Store(true)
	n.PingAll(context.Background())
	if !up()[good.URL] {
		t.Fatal("the peer answered again but is still down")
	}
}

// TestHTTPSPeerWithCAFile: a peer served over https with a certificate the
// system does not trust is down without ca_file (and says why) and up with
// its certificate there; a ca_file holding no certificate is refused at
// New.
func TestHTTPSPeerWithCAFile(t *testing.T) {
	peer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == PingPath && r.Header.Get(Header) != "" {
			return // 200
		}
		http.NotFound(w, r)
	}))
	defer peer.Close()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "peers-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: peer.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := []byte("a shared secret of the test cluster")
	stateOf := func(caFile string) PeerState {
		t.Helper()
		n, err := New(Options{Self: "https://127.0.0.1:1", Peers: []string{peer.URL}, Secret: secret, CAFile: caFile})
		if err != nil {
			t.Fatal(err)
		}
		n.PingAll(context.Background())
		return n.Stats().Peers[0]
	}
	if st := stateOf(""); st.Up || !strings.Contains(st.Err, "certificate") {
		t.Errorf("without ca_file: %+v, want down for its certificate", st)
	}
	if st := stateOf(caFile); !st.Up {
		t.Errorf("with the peer's certificate in ca_file: %+v, want up", st)
	}
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not a certificate"), 0o600)
	if _, err := New(Options{Self: "https://127.0.0.1:1", Peers: []string{peer.URL}, Secret: secret, CAFile: junk}); err == nil {
		t.Error("a ca_file without certificates was accepted")
	}
}
