package testupstream

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// hostile is the set of hostile-upstream switches: what a hijacked or
// malicious registry could answer. Like faults, they apply to authorized
// registry requests, after the status fault.
type hostile struct {
	manifestRedirect string // Location for manifest GETs and HEADs
	blobRedirect     string // base URL: blob GETs go to <base>/blobs/<digest>
	realm            string // realm named by bearer challenges
	manifestBody     []byte // served for manifest GETs and HEADs, if set
	manifestType     string
}

func (s *Server) snapshotHostile() hostile {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hostile
}

// RedirectManifests makes every authorized manifest GET and HEAD answer
// "302 Found" with Location target (an absolute URL, e.g. a Canary's
// URL()+"/latest/meta-data"); "" clears it.
func (s *Server) RedirectManifests(target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hostile.manifestRedirect = target
}

// RedirectBlobs makes every authorized blob GET answer "307 Temporary
// Redirect" to base+"/blobs/<digest>", as Docker Hub sends blob GETs to its
// CDN (base: a CDN's or a Canary's URL); "" clears it.
func (s *Server) RedirectBlobs(base string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hostile.blobRedirect = base
}

// SetRealm makes bearer challenges name realm instead of TokenURL (e.g. a
// Canary's URL()+"/token": a foreign token server); "" restores TokenURL.
func (s *Server) SetRealm(realm string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hostile.realm = realm
}

// ServeManifestBody makes every authorized manifest GET and HEAD answer 200
// with body and Content-Type contentType (something that is not a
// manifest, or lies about its type); a nil body clears it.
func (s *Server) ServeManifestBody(body []byte, contentType string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hostile.manifestBody, s.hostile.manifestType = body, contentType
}

// realm is the realm bearer challenges name: /token on the host r was
// sent to (the registry's own listener, or a reverse proxy in front of it
// that keeps the Host header), unless SetRealm says otherwise.
func (s *Server) realm(r *http.Request) string {
	if h := s.snapshotHostile(); h.realm != "" {
		return h.realm
	}
	if r.Host == "" {
		return s.TokenURL()
	}
	return "http://" + r.Host + "/token"
}

// serveHostile answers r if a hostile switch applies to it.
func (s *Server) serveHostile(w http.ResponseWriter, r *http.Request) bool {
	h := s.snapshotHostile()
	isManifest := isManifestPath(r.URL.Path) && (r.Method == http.MethodGet || r.Method == http.MethodHead)
	switch {
	case isManifest && h.manifestRedirect != "":
		http.Redirect(w, r, h.manifestRedirect, http.StatusFound)
		return true
	case isManifest && h.manifestBody != nil:
		w.Header().Set("Content-Type", h.manifestType)
		w.Header().Set("Content-Length", strconv.Itoa(len(h.manifestBody)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(h.manifestBody)
		}
		return true
	case h.blobRedirect != "" && r.Method == http.MethodGet:
		if d, ok := blobDigest(r); ok {
			http.Redirect(w, r, h.blobRedirect+"/blobs/"+d.String(), http.StatusTemporaryRedirect)
			return true
		}
	}
	return false
}

// Canary is a listener that regmirror must never reach, standing for an
// internal service (a cloud metadata endpoint, an admin API): it counts
// the TCP connections it accepts and records every request's Authorization
// header, and answers every request 200 with a secret body a test can look
// for in what clients receive. As a CDN (Server.StartCDN) it serves the
// registry's blobs instead.
type Canary struct {
	srv    *httptest.Server
	secret string
	conns  atomic.Int64

	mu       sync.Mutex
	requests []string // "METHOD path"
	auths    []string // non-empty Authorization headers
}

// StartCanary starts a canary on addr ("127.0.0.1:0", "127.0.0.2:0": any
// loopback address and port) and registers its Close with tb.Cleanup.
func StartCanary(tb testing.TB, addr string) *Canary {
	tb.Helper()
	c := &Canary{secret: "canary-secret-" + randomHex(8)}
	c.start(tb, addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"AccessKeyId":"` + c.secret + `","SecretAccessKey":"` + c.secret + `"}`))
	}))
	return c
}

func (c *Canary) start(tb testing.TB, addr string, h http.Handler) {
	tb.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatalf("testupstream: canary: listen: %v", err)
	}
	c.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.requests = append(c.requests, r.Method+" "+r.URL.Path)
		if a := r.Header.Get("Authorization"); a != "" {
			c.auths = append(c.auths, a)
		}
		c.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	c.srv.Listener.Close()
	c.srv.Listener = l
	c.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	c.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			c.conns.Add(1)
		}
	}
	c.srv.Start()
	tb.Cleanup(c.srv.Close)
}

// URL is the canary's base URL, http://<addr>:<port>.
func (c *Canary) URL() string { return c.srv.URL }

// Host is the canary's host:port.
func (c *Canary) Host() string { return strings.TrimPrefix(c.srv.URL, "http://") }

// Secret is the text the canary's answers carry.
func (c *Canary) Secret() string { return c.secret }

// Connections is the number of TCP connections the canary has accepted.
func (c *Canary) Connections() int { return int(c.conns.Load()) }

// Requests lists the requests received, as "METHOD path".
func (c *Canary) Requests() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.requests...)
}

// StartCanaries starts the two canaries every hostile test watches: one on
// another port of the upstream's own loopback address, one on another
// loopback address.
func StartCanaries(tb testing.TB) []*Canary {
	return []*Canary{StartCanary(tb, "127.0.0.1:0"), StartCanary(tb, "127.0.0.2:0")}
}

// WantUntouched fails tb if anything connected to the canary.
func (c *Canary) WantUntouched(tb testing.TB) {
	tb.Helper()
	if n := c.Connections(); n != 0 {
		tb.Errorf("canary %s accepted %d connections: requests %v, Authorization %q", c.Host(), n, c.Requests(), c.Authorizations())
	}
}

// Authorizations lists the non-empty Authorization headers received.
func (c *Canary) Authorizations() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.auths...)
}

// StartCDN starts a blob store on addr that serves this registry's blobs
// at /blobs/<digest> without authentication (Range supported), recording
// requests like a Canary; point RedirectBlobs at its URL.
func (s *Server) StartCDN(tb testing.TB, addr string) *Canary {
	tb.Helper()
	c := &Canary{secret: "cdn"}
	c.start(tb, addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, err := v1.NewHash(strings.TrimPrefix(r.URL.Path, "/blobs/"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		f, err := os.Open(s.blobs.path(h))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", fi.ModTime(), f)
	}))
	return c
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
