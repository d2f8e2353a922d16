package testupstream

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
)

// Service is the service name the registry's challenge names.
const Service = "test-registry"

// DefaultTokenExpiry is how long a token lives unless WithTokenExpiry says otherwise.
const DefaultTokenExpiry = 300 * time.Second

type authMode int

const (
	authBearer authMode = iota
	authBasic
	authNone
)

type options struct {
	user, pass  string
	tokenExpiry time.Duration
	mode        authMode
	now         func() time.Time
}

// Option configures a Server.
type Option func(*options)

// WithCredentials makes the registry private: the token server demands HTTP
// basic auth with user and pass (401 otherwise) and gives anonymous clients
// no token. With WithBasicChallenge the registry itself checks them.
func WithCredentials(user, pass string) Option {
	return func(o *options) { o.user, o.pass = user, pass }
}

// WithTokenExpiry sets the lifetime of issued tokens (default 300 s). The
// token response reports it rounded up to whole seconds (at least 1), while
// the server enforces the exact duration.
func WithTokenExpiry(d time.Duration) Option {
	return func(o *options) { o.tokenExpiry = d }
}

// WithClock makes the token server issue and expire tokens by now instead
// of the real clock, so that a test steps past a token's expiry without
// sleeping.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithBasicChallenge makes the registry answer `WWW-Authenticate: Basic` and
// check the WithCredentials user and password on every request, with no token
// server involved (like a plain distribution registry with htpasswd).
func WithBasicChallenge() Option {
	return func(o *options) { o.mode = authBasic }
}

// WithNoAuth makes the registry accept every request without credentials
// (GET /v2/ answers 200, as a registry without auth does).
func WithNoAuth() Option {
	return func(o *options) { o.mode = authNone }
}

// Server is a fake upstream registry plus its token server. All methods are
// safe for concurrent use.
type Server struct {
	opts   options
	reg    http.Handler
	blobs  *diskBlobs
	regSrv *httptest.Server
	client *http.Transport // used by the push helpers

	closeOnce sync.Once
	closing   chan struct{}

	mu            sync.Mutex
	tokens        map[string]*grant
	refreshTokens map[string]struct{} // issued by OAuth2 password grants
	counts        map[string]int      // "METHOD path"
	blobGets      map[digest.Digest]int
	manifestReqs  map[string]int // method
	tokenReqs     int
	unauthorized  int
	faults        faults
	gates         map[digest.Digest]*Gate
	headGate      *Gate // see GateManifestHeads
	hostile       hostile
	rateLimit     rateLimit
	seen          seenHeaders
}

// Start starts a registry and its token server on a loopback listener and
// registers Close with tb.Cleanup.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	o := options{tokenExpiry: DefaultTokenExpiry, now: time.Now}
	for _, f := range opts {
		f(&o)
	}
	if o.mode == authBasic && o.user == "" {
		tb.Fatal("testupstream: WithBasicChallenge needs WithCredentials")
	}
	s := &Server{
		opts:          o,
		blobs:         &diskBlobs{dir: tb.TempDir()},
		closing:       make(chan struct{}),
		tokens:        map[string]*grant{},
		refreshTokens: map[string]struct{}{},
		counts:        map[string]int{},
		blobGets:      map[digest.Digest]int{},
		manifestReqs:  map[string]int{},
		gates:         map[digest.Digest]*Gate{},
	}
	s.faults.cutAfter = -1
	s.reg = registry.New(
		registry.WithBlobHandler(s.blobs),
		registry.Logger(log.New(io.Discard, "", 0)),
	)
	s.regSrv = newLoopbackServer(tb, "127.0.0.1:0", http.HandlerFunc(s.serveRegistry))
	s.client = http.DefaultTransport.(*http.Transport).Clone()
	tb.Cleanup(s.Close)
	return s
}

func newLoopbackServer(tb testing.TB, addr string, h http.Handler) *httptest.Server {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatalf("testupstream: listen: %v", err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = l
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	return srv
}

// URL is the registry's base URL, http://127.0.0.1:<port>.
func (s *Server) URL() string { return s.regSrv.URL }

// Host is the registry's host:port, 127.0.0.1:<port>.
func (s *Server) Host() string { return strings.TrimPrefix(s.regSrv.URL, "http://") }

// TokenURL is the token server's realm, http://127.0.0.1:<port>/token, on
// the registry's own listener.
func (s *Server) TokenURL() string { return s.regSrv.URL + "/token" }

// Ref names repo:tag (or repo@digest when ref starts with "sha256:") on this registry.
func (s *Server) Ref(repo, ref string) string {
	if strings.Contains(ref, ":") {
		return s.Host() + "/" + repo + "@" + ref
	}
	return s.Host() + "/" + repo + ":" + ref
}

// Close opens every gate, stops the server and waits for its handlers.
// It is idempotent; Start registers it with Cleanup.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.regSrv.Close()
		s.client.CloseIdleConnections()
	})
}

// serveRegistry is the registry listener's handler: faults, auth, counters,
// then blob GETs here and everything else in pkg/registry.
func (s *Server) serveRegistry(w http.ResponseWriter, r *http.Request) {
	s.seen.record(r)
	if r.URL.Path == "/token" {
		s.serveToken(w, r) // no registry faults: the token server stays up
		return
	}
	f := s.snapshotFaults()
	if f.latency > 0 {
		t := time.NewTimer(f.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-s.closing:
			t.Stop()
			return
		}
	}
	if f.down {
		s.count(r)
		dropConnection(w)
		return
	}
	if !s.authorize(w, r) {
		return
	}
	s.count(r)
	if !s.holdManifestHead(r) {
		return
	}
	s.rateLimitHeaders(w, r)
	if f.status != 0 {
		writeStatusFault(w, r, f.status, f.retryAfter)
		return
	}
	if f.getStatus != 0 && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") {
		writeStatusFault(w, r, f.getStatus, f.retryAfter)
		return
	}
	if s.serveHostile(w, r) {
		return
	}
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if d, ok := blobDigest(r); ok && r.Method == http.MethodGet {
		s.serveBlob(w, r, d, f)
		return
	}
	s.reg.ServeHTTP(w, r)
}

// dropConnection closes the client's connection without a response.
func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			c.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// writeRegistryError writes the registry JSON error body.
func writeRegistryError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]string{{"code": code, "message": msg}},
	})
}

func writeStatusFault(w http.ResponseWriter, _ *http.Request, status int, retryAfter string) {
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	code := "UNKNOWN"
	switch status {
	case http.StatusTooManyRequests:
		code = "TOOMANYREQUESTS"
	case http.StatusServiceUnavailable:
		code = "UNAVAILABLE"
	case http.StatusForbidden:
		code = "DENIED"
	case http.StatusUnauthorized:
		code = "UNAUTHORIZED"
	case http.StatusNotFound:
		code = "NAME_UNKNOWN"
	}
	writeRegistryError(w, status, code, fmt.Sprintf("injected fault: %d %s", status, http.StatusText(status)))
}

// pathInfo splits a /v2/ path into the repository it names ("" if none) and
// whether it is a blob path, following the trailing-component rule of the
// distribution spec (repository names may themselves contain "blobs").
func pathInfo(p string) (repo string, blob string) {
	if !strings.HasPrefix(p, "/v2/") {
		return "", ""
	}
	elem := strings.Split(strings.TrimSuffix(strings.TrimPrefix(p, "/v2/"), "/"), "/")
	n := len(elem)
	switch {
	case n >= 3 && elem[n-2] == "blobs" && elem[n-1] == "uploads":
		return strings.Join(elem[:n-2], "/"), ""
	case n >= 4 && elem[n-3] == "blobs" && elem[n-2] == "uploads":
		return strings.Join(elem[:n-3], "/"), ""
	case n >= 3 && elem[n-2] == "blobs":
		return strings.Join(elem[:n-2], "/"), elem[n-1]
	case n >= 3 && elem[n-2] == "manifests":
		return strings.Join(elem[:n-2], "/"), ""
	case n >= 3 && elem[n-2] == "tags" && elem[n-1] == "list":
		return strings.Join(elem[:n-2], "/"), ""
	case n >= 3 && elem[n-2] == "referrers":
		return strings.Join(elem[:n-2], "/"), ""
	}
	return "", ""
}

func blobDigest(r *http.Request) (digest.Digest, bool) {
	_, b := pathInfo(r.URL.Path)
	if b == "" {
		return "", false
	}
	d, err := digest.Parse(b)
	return d, err == nil
}

func isManifestPath(p string) bool {
	elem := strings.Split(strings.TrimSuffix(p, "/"), "/")
	return len(elem) >= 5 && elem[len(elem)-2] == "manifests"
}

func (s *Server) count(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[r.Method+" "+r.URL.Path]++
	if d, ok := blobDigest(r); ok && r.Method == http.MethodGet {
		s.blobGets[d]++
	}
	if isManifestPath(r.URL.Path) {
		s.manifestReqs[r.Method]++
	}
}

// Count is the number of registry requests with this method and exact URL
// path (no query), e.g. Count("GET", "/v2/library/alpine/manifests/3.20").
func (s *Server) Count(method, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[method+" "+path]
}

// BlobGETs is the number of GETs of /v2/<any repo>/blobs/<d>.
func (s *Server) BlobGETs(d digest.Digest) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blobGets[d]
}

// ManifestRequests is the number of requests with method to any
// /v2/<repo>/manifests/<ref>.
func (s *Server) ManifestRequests(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.manifestReqs[method]
}

// TokenRequests is the number of requests to the token endpoint (GET or
// POST, successful or not).
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenReqs
}

// Unauthorized is the number of registry requests answered with a 401 challenge.
func (s *Server) Unauthorized() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unauthorized
}

// Reset zeroes every counter (faults, gates and tokens are kept).
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts = map[string]int{}
	s.blobGets = map[digest.Digest]int{}
	s.manifestReqs = map[string]int{}
	s.tokenReqs = 0
	s.unauthorized = 0
}
