package proxy

import (
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/access"
	"github.com/regmirror/regmirror/upstream"
)

// Peers is what the proxy needs from a cluster of mirrors (package
// cluster): checking the signature of requests other nodes send, and
// hearing which blobs they ask for.
type Peers interface {
	// Verify checks a request's peer signature; header looks up a request
	// header. ok is false (err nil) when the request carries none.
	Verify(method, uri string, header func(name string) string) (ok bool, err error)
	// Serving tells that a verified peer asked for blob d: this node must
	// fill d from its own sources, never from another peer.
	Serving(d digest.Digest)
}

// peerUser is who a verified peer request is, for access control and logs.
const peerUser = "regmirror-peer"

// peerPingPath is where the peers' health pings go (cluster.PingPath).
const peerPingPath = "/_regmirror/peer"

// PeerUpstreamFailedHeader marks an error answer to a peer that this
// node's upstream caused (cluster.UpstreamFailedHeader): the asking node
// then fetches that blob itself without taking this node for down, which
// would send every digest this node owns elsewhere until its next ping.
const PeerUpstreamFailedHeader = "X-Regmirror-Upstream-Failed"

var hdrUpstreamFailed = []byte(PeerUpstreamFailedHeader)

// markUpstreamFailure sets hdrUpstreamFailed on an error answer to a
// verified peer when err is upstream's doing (it failed, rate limited,
// refused or sent content that is not what it should be) or this node is
// only busy (its fill caps, its pass-through budget): the asking node
// then fetches the blob itself and keeps this node for its other digests.
func markUpstreamFailure(ctx *fasthttp.RequestCtx, ex *exchange, err error) {
	if ex.user != peerUser {
		return
	}
	if isUpstreamOutage(err) || errors.Is(err, errUpstreamCorrupt) || errors.Is(err, upstream.ErrRefused) ||
		errors.Is(err, upstream.ErrInvalidManifest) || errors.Is(err, upstream.ErrTooLarge) ||
		errors.Is(err, upstream.ErrBadRequest) || errors.Is(err, errTooManyFills) || errors.Is(err, errPassThroughMemory) {
		ctx.Response.Header.SetCanonical(hdrUpstreamFailed, []byte("1"))
	}
}

func (s *Server) verifyPeer(ctx *fasthttp.RequestCtx) (bool, error) {
	return s.opts.Peers.Verify(string(ctx.Method()), string(ctx.RequestURI()), func(name string) string {
		return string(ctx.Request.Header.Peek(name))
	})
}

// servePeerPing answers a peer's health ping: 200 when it is signed with
// the shared key and this node is ready (as /readyz says), 401 or 503
// otherwise.
func (s *Server) servePeerPing(ctx *fasthttp.RequestCtx, ex *exchange) (reply, error) {
	ex.endpoint = "health"
	ok, err := s.verifyPeer(ctx)
	if !ok {
		if err == nil {
			err = fmt.Errorf("%w: a peer ping must be signed", access.ErrUnauthenticated)
		}
		return reply{}, fmt.Errorf("%w: %w", access.ErrUnauthenticated, err)
	}
	ex.user = peerUser
	if s.opts.Operator.Ready != nil {
		for _, c := range s.opts.Operator.Ready() {
			if !c.OK {
				return reply{status: fasthttp.StatusServiceUnavailable, body: []byte("not ready: " + c.Name + ": " + c.Reason + "\n")}, nil
			}
		}
	}
	return reply{body: []byte("ok\n")}, nil
}

// checkPeer checks the peer signature of a routed request that carries
// one. A verified peer passes access control (ex.user = peerUser) and, for
// a blob GET, makes this node fill the blob itself; a bad signature is
// refused (401).
func (s *Server) checkPeer(ctx *fasthttp.RequestCtx, ex *exchange, rq request, e endpoint) error {
	if s.opts.Peers == nil {
		return nil
	}
	ok, err := s.verifyPeer(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", access.ErrUnauthenticated, err)
	}
	if ok {
		ex.user = peerUser
		if e == endpointBlob && ctx.IsGet() {
			s.opts.Peers.Serving(rq.ref.digest)
		}
	}
	return nil
}
