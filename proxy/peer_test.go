package proxy

import (
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/regmirror/regmirror/upstream"
	"github.com/valyala/fasthttp"
)

// fakePeers accepts the header value "good" and refuses any other.
type fakePeers struct {
	serving []digest.Digest
	uris    []string
}

func (f *fakePeers) Verify(method, uri string, header func(string) string) (bool, error) {
	f.uris = append(f.uris, method+" "+uri)
	switch header("X-Regmirror-Peer") {
	case "":
		return false, nil
	case "good":
		return true, nil
	}
	return false, errors.New("bad peer signature")
}

func (f *fakePeers) Serving(d digest.Digest) { f.serving = append(f.serving, d) }

func serveWithPeer(s *Server, method, uri, peer string) int {
	return peerAnswer(s, method, uri, peer).StatusCode()
}

// peerAnswer is the response to a request signed peer ("" for none).
func peerAnswer(s *Server, method, uri, peer string) *fasthttp.Response {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	if peer != "" {
		req.Header.Set("X-Regmirror-Peer", peer)
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40000}, nil)
	s.Handler()(&ctx)
	var resp fasthttp.Response
	ctx.Response.CopyTo(&resp)
	return &resp
}

// TestPeerRequestsPassAccess: with access control that knows nobody, a
// verified peer request passes it (like the internal token) and a blob GET
// tells the cluster which digest a peer asked for; a bad signature is
// refused 401 before any work; an unsigned request meets access control as
// before. The ping endpoint answers only signed pings.
func TestPeerRequestsPassAccess(t *testing.T) {
	s := newAccessServer(t, &fakeAccess{users: map[string]string{}}, false)
	peers := &fakePeers{}
	s.opts.Peers = peers
	d := digest.FromString("some blob")
	blob := "/v2/library/alpine/blobs/" + d.String() + "?ns=docker.io"

	if resp := peerAnswer(s, "GET", blob, ""); resp.StatusCode() != 401 || len(resp.Header.PeekBytes(hdrUpstreamFailed)) != 0 {
		t.Fatalf("unsigned, unknown client: %d (%s: %q), want 401 without it", resp.StatusCode(), hdrUpstreamFailed, resp.Header.PeekBytes(hdrUpstreamFailed))
	}
	if code := serveWithPeer(s, "GET", blob, "bad"); code != 401 {
		t.Fatalf("bad signature: %d, want 401", code)
	}
	if len(peers.serving) != 0 {
		t.Fatal("a refused request reached Serving")
	}
	// Signed: past access control; the upstream (nothing listens) is what
	// fails, and the answer says so, for the asker not to take this node
	// for down.
	resp := peerAnswer(s, "GET", blob, "good")
	if code := resp.StatusCode(); code == 401 || code == 403 {
		t.Fatalf("verified peer: %d, refused by access control", code)
	}
	if string(resp.Header.PeekBytes(hdrUpstreamFailed)) != "1" {
		t.Errorf("verified peer, upstream down: %d without %s", resp.StatusCode(), hdrUpstreamFailed)
	}
	if len(peers.serving) != 1 || peers.serving[0] != d {
		t.Fatalf("Serving got %v, want [%s]", peers.serving, d)
	}
	if peers.uris[len(peers.uris)-1] != "GET "+blob {
		t.Fatalf("verified %q, want the method and the whole request URI", peers.uris[len(peers.uris)-1])
	}
	// A HEAD is verified but starts no fill, so it is not Serving.
	if code := serveWithPeer(s, "HEAD", blob, "good"); code == 401 || code == 403 {
		t.Fatalf("verified peer HEAD: %d", code)
	}
	if len(peers.serving) != 1 {
		t.Fatal("a HEAD was counted as a peer fill")
	}

	for _, tc := range []struct {
		peer string
		want int
	}{{"", 401}, {"bad", 401}, {"good", 200}} {
		if code := serveWithPeer(s, "GET", peerPingPath, tc.peer); code != tc.want {
			t.Errorf("ping with %q: %d, want %d", tc.peer, code, tc.want)
		}
	}
	// Not ready: a signed ping says so.
	s.opts.Operator.Ready = func() []Check { return []Check{{Name: "index", Reason: "opening"}} }
	if code := serveWithPeer(s, "GET", peerPingPath, "good"); code != 503 {
		t.Errorf("ping while not ready: %d, want 503", code)
	}
	// Without a cluster the path is nothing special.
	s.opts.Peers = nil
	if code := serveWithPeer(s, "GET", peerPingPath, "good"); code == 200 {
		t.Error("the ping endpoint answers without a cluster")
	}
}

// TestPeerBusyOrRefusedIsNoPeerDown: an owner whose upstream refuses the
// request (a 4xx), or that is only busy (its fill caps, its pass-through
// budget), says so to the asking peer, which then fetches that blob itself
// instead of taking the owner for down (and cutting its other downloads).
func TestPeerBusyOrRefusedIsNoPeerDown(t *testing.T) {
	for _, err := range []error{
		fmt.Errorf("%w: GET blob: 400 NAME_INVALID", upstream.ErrBadRequest),
		fmt.Errorf("%w (256)", errTooManyFills),
		errPassThroughMemory,
		fmt.Errorf("%w: GET blob: 503", upstream.ErrUnavailable),
	} {
		var ctx fasthttp.RequestCtx
		markUpstreamFailure(&ctx, &exchange{user: peerUser}, err)
		if string(ctx.Response.Header.PeekBytes(hdrUpstreamFailed)) != "1" {
			t.Errorf("%v: no %s", err, hdrUpstreamFailed)
		}
	}
}
