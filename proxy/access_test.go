package proxy

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/access"
	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/upstream"
)

// fakeAccess knows one password user per name and who is an admin.
type fakeAccess struct {
	users  map[string]string // user → password
	admins map[string]bool
	calls  int
}

func (f *fakeAccess) Identify(c access.Client) (string, error) {
	f.calls++
	for u, p := range f.users {
		if c.Authorization == "Basic "+base64.StdEncoding.EncodeToString([]byte(u+":"+p)) {
			return u, nil
		}
	}
	return "", access.ErrUnauthenticated
}

func (f *fakeAccess) Authorize(c access.Client, registry, repo string) (string, error) {
	u, err := f.Identify(c)
	if err != nil {
		return "", err
	}
	if repo == "denied/repo" {
		return u, access.ErrDenied
	}
	return u, nil
}

func (f *fakeAccess) IsAdmin(user string) bool { return f.admins[user] }

func (f *fakeAccess) May(user, registry, repo string) bool { return repo != "denied/repo" }

func newAccessServer(t *testing.T, acc Access, tls bool) *Server {
	t.Helper()
	reg := unreachable(t, "docker.io")
	store := tempStore(t)
	o := Options{Registries: []Upstream{reg}, Store: store, Access: acc,
		Admin: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer tok" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.Write([]byte("token"))
		}),
		AdminOpen: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("open")) }),
	}
	if tls {
		o.TLSCertFile, o.TLSKeyFile = "cert.pem", "key.pem" // only read by Serve
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func serveFrom(s *Server, ip, path, auth string) (int, string, string) {
	return serveFromTo(s, ip, "0.0.0.0", path, auth)
}

// serveFromTo is serveFrom on a connection to the server's address local.
func serveFromTo(s *Server, ip, local, path, auth string) (int, string, string) {
	var req fasthttp.Request
	req.SetRequestURI(path)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	var ctx fasthttp.RequestCtx
	ctx.Init2(addrConn{local: &net.TCPAddr{IP: net.ParseIP(local), Port: 5000}, remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}, nil, false)
	req.CopyTo(&ctx.Request)
	s.Handler()(&ctx)
	return ctx.Response.StatusCode(), string(ctx.Response.Body()), string(ctx.Response.Header.Peek("WWW-Authenticate"))
}

// addrConn is a connection that only has its two addresses.
type addrConn struct {
	net.Conn
	local, remote net.Addr
}

func (c addrConn) LocalAddr() net.Addr  { return c.local }
func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func basicHeader(u, p string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p))
}

// TestAdminAccess: the management API answers loopback clients with the
// token as before, and identified admins from any address over TLS;
// everyone else from afar is refused.
func TestAdminAccess(t *testing.T) {
	acc := &fakeAccess{users: map[string]string{"alice": "a", "bob": "b"}, admins: map[string]bool{"alice": true}}
	s := newAccessServer(t, acc, true)
	tests := []struct {
		name, ip, auth string
		status         int
		body           string
	}{
		{"loopback with the token", "127.0.0.1", "Bearer tok", 200, "token"},
		{"loopback without it", "127.0.0.1", "", 401, ""},
		{"remote admin", "203.0.113.9", basicHeader("alice", "a"), 200, "open"},
		{"remote admin, wrong password", "203.0.113.9", basicHeader("alice", "x"), 403, ""},
		{"remote non-admin", "203.0.113.9", basicHeader("bob", "b"), 403, ""},
		{"remote with the token", "203.0.113.9", "Bearer tok", 403, ""},
		{"loopback admin without the token", "127.0.0.1", basicHeader("alice", "a"), 200, "open"},
	}
	for _, tt := range tests {
		status, body, _ := serveFrom(s, tt.ip, "/_regmirror/usage", tt.auth)
		if status != tt.status || (tt.body != "" && body != tt.body) {
			t.Errorf("%s: %d %q, want %d %q", tt.name, status, body, tt.status, tt.body)
		}
	}
	// Without TLS no password is taken from afar.
	plain := newAccessServer(t, acc, false)
	if status, _, _ := serveFrom(plain, "203.0.113.9", "/_regmirror/usage", basicHeader("alice", "a")); status != 403 {
		t.Errorf("remote admin over plain HTTP: %d, want 403", status)
	}
}

// TestAccessAskedOncePerRequest: every pull request is put to access
// exactly once, after routing, and refusals carry the right wire codes.
func TestAccessAskedOncePerRequest(t *testing.T) {
	acc := &fakeAccess{users: map[string]string{"ci": "pw"}}
	s := newAccessServer(t, acc, false)
	ci := basicHeader("ci", "pw")
	tests := []struct {
		path, auth string
		status     int
	}{
		{"/v2/", "", 401},
		{"/v2/", ci, 200},
		{"/v2/denied/repo/manifests/latest", ci, 403},
		{"/v2/docker.io/denied/repo/tags/list", ci, 403},
		{"/v2/denied/repo/blobs/sha256:" + "0000000000000000000000000000000000000000000000000000000000000000", ci, 403},
		{"/v2/denied/repo/manifests/latest?ns=docker.io", ci, 403},
		{"/v2/library/alpine/manifests/latest", "", 401},
		{"/v2/quay.io/x/manifests/latest?ns=quay.io", "", 401}, // unroutable, but who asks is checked first
		{"/v2/quay.io/x/manifests/latest?ns=quay.io", ci, 403}, // then the routing error
	}
	for _, tt := range tests {
		before := acc.calls
		status, body, challenge := serveFrom(s, "203.0.113.9", tt.path, tt.auth)
		if status != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.path, status, body, tt.status)
		}
		if acc.calls-before != 1 {
			t.Errorf("%s: access asked %d times, want once", tt.path, acc.calls-before)
		}
		if (status == 401) != (challenge == `Basic realm="regmirror"`) {
			t.Errorf("%s: %d with WWW-Authenticate %q", tt.path, status, challenge)
		}
	}
}

// TestInternalToken: the mirror's own preloads (loopback, management
// token) pass access control; the token from afar is no identity.
func TestInternalToken(t *testing.T) {
	acc := &fakeAccess{users: map[string]string{"ci": "pw"}}
	s := newAccessServer(t, acc, false)
	s.opts.InternalToken = "internal"
	if status, _, _ := serveFrom(s, "127.0.0.1", "/v2/", "Bearer internal"); status != 200 {
		t.Errorf("loopback with the internal token: %d", status)
	}
	if status, _, _ := serveFrom(s, "203.0.113.9", "/v2/", "Bearer internal"); status != 401 {
		t.Errorf("remote with the internal token: %d, want 401", status)
	}
	if status, _, _ := serveFrom(s, "127.0.0.1", "/v2/", "Bearer other"); status != 401 {
		t.Errorf("loopback with another token: %d, want 401", status)
	}
	// A server that listens on every address: only loopback is this machine
	// (a relay on the box connecting from one of its addresses is not).
	if status, _, _ := serveFromTo(s, "10.0.0.5", "10.0.0.5", "/v2/", "Bearer internal"); status != 401 {
		t.Errorf("listening everywhere, from its own address with the internal token: %d, want 401", status)
	}
	// A server that listens on one address is reached there by its own
	// commands: from that address to itself counts as this machine.
	s.listenIP = net.ParseIP("10.0.0.5")
	if status, _, _ := serveFromTo(s, "10.0.0.5", "10.0.0.5", "/v2/", "Bearer internal"); status != 200 {
		t.Errorf("from the server's own address with the internal token: %d", status)
	}
	if status, _, _ := serveFromTo(s, "10.0.0.6", "10.0.0.5", "/v2/", "Bearer internal"); status != 401 {
		t.Errorf("from another address of its network with the internal token: %d, want 401", status)
	}
}

// recordingAccess remembers what each request was authorized for and
// denies it, so nothing else happens.
type recordingAccess struct{ registry, repo string }

func (r *recordingAccess) Identify(access.Client) (string, error) { return "u", nil }
func (r *recordingAccess) Authorize(_ access.Client, registry, repo string) (string, error) {
	r.registry, r.repo = registry, repo
	return "u", access.ErrDenied
}
func (r *recordingAccess) IsAdmin(string) bool             { return false }
func (r *recordingAccess) May(string, string, string) bool { return false }

// TestAccessSeesResolvedNames: access is asked about the registry and
// repository routing resolved, whatever the addressing form: the bare name
// (default registry, Docker Hub's library/ defaulting), ?ns=, a path
// prefix, a Host alias.
func TestAccessSeesResolvedNames(t *testing.T) {
	var ups []Upstream
	for _, name := range []string{"docker.io", "ghcr.io"} {
		up, err := upstream.New(upstream.Options{Name: name, URL: "http://127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		ups = append(ups, up)
	}
	store, err := cache.Open(cache.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rec := &recordingAccess{}
	s, err := New(Options{Registries: ups, Store: store, Access: rec, HostAliases: map[string]string{"ghcr.mirror.lan": "ghcr.io"}})
	if err != nil {
		t.Fatal(err)
	}
	const d = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	tests := []struct {
		path, host     string
		registry, repo string
	}{
		{"/v2/alpine/manifests/latest", "", "docker.io", "library/alpine"},
		{"/v2/library/alpine/blobs/" + d, "", "docker.io", "library/alpine"},
		{"/v2/org/app/manifests/v1?ns=ghcr.io", "", "ghcr.io", "org/app"},
		{"/v2/alpine/tags/list?ns=docker.io", "", "docker.io", "library/alpine"},
		{"/v2/ghcr.io/org/app/referrers/" + d, "", "ghcr.io", "org/app"},
		{"/v2/docker.io/alpine/manifests/" + d, "", "docker.io", "library/alpine"},
		{"/v2/index.docker.io/org/app/manifests/1", "", "docker.io", "org/app"},
		{"/v2/org/app/manifests/v1", "ghcr.mirror.lan", "ghcr.io", "org/app"},
		{"/v2/org/app/manifests/v1", "ghcr.mirror.lan:5000", "ghcr.io", "org/app"},
		{"/v2/org/app/manifests/v1", "other.lan", "docker.io", "org/app"},
	}
	for _, tt := range tests {
		*rec = recordingAccess{}
		var req fasthttp.Request
		req.SetRequestURI(tt.path)
		if tt.host != "" {
			req.Header.SetHost(tt.host)
		}
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 40000}, nil)
		s.Handler()(&ctx)
		if rec.registry != tt.registry || rec.repo != tt.repo {
			t.Errorf("%s (Host %q): access asked about %s/%s, want %s/%s", tt.path, tt.host, rec.registry, rec.repo, tt.registry, tt.repo)
		}
		if ctx.Response.StatusCode() != 403 {
			t.Errorf("%s: %d, want 403", tt.path, ctx.Response.StatusCode())
		}
	}
}

// TestAUserNamedRegmirror: an identity access control gives the name the
// internal token's client has in logs ("regmirror") sees only what its
// rules allow on the status page and in the catalog; only the token sees
// everything.
func TestAUserNamedRegmirror(t *testing.T) {
	acc := &fakeAccess{users: map[string]string{internalUser: "pw"}}
	s, err := New(Options{Registries: []Upstream{unreachable(t, "docker.io")}, Store: tempStore(t), Access: acc, InternalToken: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	may := func(ip, authorization string) bool {
		var req fasthttp.Request
		req.Header.Set("Authorization", authorization)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}, nil)
		return accessPolicy{s}.MayPull(&ctx, "docker.io", "denied/repo")
	}
	if may("203.0.113.7", "Basic "+base64.StdEncoding.EncodeToString([]byte(internalUser+":pw"))) {
		t.Error(`a user named "regmirror" may see a repository its rules deny`)
	}
	if !may("127.0.0.1", "Bearer tok") {
		t.Error("the internal token's client may not see everything")
	}
}

// TestRefusedClientsLearnNoRegistries: a client access control refuses
// gets the same answer whether ?ns= names a configured registry or not.
// Before, /v2/?ns=secret.example answered 403 "not configured" where a
// configured one answered 401, and the catalog likewise.
func TestRefusedClientsLearnNoRegistries(t *testing.T) {
	s := newAccessServer(t, &fakeAccess{users: map[string]string{"bob": "pw"}}, false)
	answer := func(uri string, header ...string) string {
		r := serveOnce(s, "GET", uri, "203.0.113.7", header...)
		return fmt.Sprintf("%d %s", r.StatusCode(), r.Body())
	}
	for _, path := range []string{"/v2/", "/v2/_catalog"} {
		if known, unknown := answer(path+"?ns=docker.io"), answer(path+"?ns=secret.example"); known != unknown {
			t.Errorf("%s without credentials: configured %q, not configured %q", path, known, unknown)
		}
	}
	bob := "Basic " + base64.StdEncoding.EncodeToString([]byte("bob:pw"))
	if got := answer("/v2/?ns=secret.example", "Authorization", bob); !strings.HasPrefix(got, "403") {
		t.Errorf("/v2/?ns= of a registry not configured, to a user: %s, want 403", got)
	}
}
