package proxy

import (
	"context"
	"encoding/base64"
	"net"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/upstream"
)

// redirecting is an upstream whose blobs are all in a shared store.
type redirecting struct {
	*upstream.Registry
	asked int
}

func (r *redirecting) BlobRedirect(context.Context, string, digest.Digest) (string, bool) {
	r.asked++
	return "http://store.example/b/obj?sig=x", true
}

// TestBlobRedirect: a blob GET the cache cannot answer is answered 307 to
// the URL a BlobRedirector offers (outcome "redirect"); a HEAD, a peer's
// request and the mirror's own pulls (internal token) are not redirected.
func TestBlobRedirect(t *testing.T) {
	reg := unreachable(t, "docker.io")
	store := tempStore(t)
	up := &redirecting{Registry: reg}
	s, err := New(Options{Registries: []Upstream{up}, Store: store, InternalToken: "tok", Peers: &fakePeers{}})
	if err != nil {
		t.Fatal(err)
	}
	blob := "/v2/library/alpine/blobs/" + digest.FromString("b").String()
	do := func(method string, ip string, header ...string) *fasthttp.Response {
		return serveOnce(s, method, blob, ip, header...)
	}
	resp := do("GET", "203.0.113.7")
	if resp.StatusCode() != 307 || string(resp.Header.Peek("Location")) != "http://store.example/b/obj?sig=x" ||
		string(resp.Header.Peek(CacheHeader)) != string(OutcomeRedirect) {
		t.Fatalf("GET: %d Location %q outcome %q", resp.StatusCode(), resp.Header.Peek("Location"), resp.Header.Peek(CacheHeader))
	}
	if o, ok := ParseOutcome(string(OutcomeRedirect)); !ok || o != OutcomeRedirect {
		t.Error("ParseOutcome does not know redirect")
	}
	for name, r := range map[string]*fasthttp.Response{
		"HEAD":           do("HEAD", "203.0.113.7"),
		"peer":           do("GET", "203.0.113.7", "X-Regmirror-Peer", "good"),
		"internal token": do("GET", "127.0.0.1", "Authorization", "Bearer tok"),
	} {
		if r.StatusCode() == 307 {
			t.Errorf("%s: redirected", name)
		}
	}
	if up.asked != 1 {
		t.Errorf("BlobRedirect asked %d times, want 1", up.asked)
	}
}

// serveOnce answers one request from ip through s's handler.
func serveOnce(s *Server, method, uri, ip string, header ...string) *fasthttp.Response {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}, nil)
	s.Handler()(&ctx)
	var resp fasthttp.Response
	ctx.Response.CopyTo(&resp)
	return &resp
}

// TestBlobRedirectNeedsALink: with a private registry configured, a
// repository gets a digest it did not fetch only once upstream confirms it
// there (confirmInRepo), so a redirect, which skips that, is offered only
// for a digest linked to the repository.
func TestBlobRedirectNeedsALink(t *testing.T) {
	hub := unreachable(t, "docker.io")
	corp := unreachable(t, "registry.corp:5000")
	store := tempStore(t)
	s, err := New(Options{Registries: []Upstream{&redirecting{Registry: hub}, corp}, Store: store,
		PrivateRegistries: map[string]bool{"registry.corp:5000": true}})
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("a private layer")
	blob := "/v2/library/x/blobs/" + d.String()
	if resp := serveOnce(s, "GET", blob, "203.0.113.7"); resp.StatusCode() == 307 {
		t.Fatalf("unlinked digest: redirected to %s without confirming it in library/x", resp.Header.Peek("Location"))
	}
	if err := store.AddLink("docker.io", "library/x", d); err != nil {
		t.Fatal(err)
	}
	if resp := serveOnce(s, "GET", blob, "203.0.113.7"); resp.StatusCode() != 307 {
		t.Fatalf("linked digest: %d, want 307", resp.StatusCode())
	}
}

// TestAdminsAreNotRedirected: an admin's blob GET (a remote `preload
// --server ... --username`) is not redirected to the shared store: it is
// meant to fill this node's cache, and the admin's client adds its
// credentials to every request it sends, the store's included. Other
// users are.
func TestAdminsAreNotRedirected(t *testing.T) {
	up := &redirecting{Registry: unreachable(t, "docker.io")}
	acc := &fakeAccess{users: map[string]string{"alice": "a", "bob": "b"}, admins: map[string]bool{"alice": true}}
	s, err := New(Options{Registries: []Upstream{up}, Store: tempStore(t), Access: acc})
	if err != nil {
		t.Fatal(err)
	}
	blob := "/v2/library/alpine/blobs/" + digest.FromString("b").String()
	basic := func(user, pw string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw)) }
	if r := serveOnce(s, "GET", blob, "203.0.113.7", "Authorization", basic("alice", "a")); r.StatusCode() == 307 {
		t.Error("an admin's blob GET was redirected")
	}
	if r := serveOnce(s, "GET", blob, "203.0.113.7", "Authorization", basic("bob", "b")); r.StatusCode() != 307 {
		t.Errorf("a user's blob GET: %d, want 307", r.StatusCode())
	}
}
