package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regmirror/regmirror/upstream"

	"github.com/opencontainers/go-digest"
)

// Options configures a Node. Zero values take the defaults named.
type Options struct {
	// Self is how the peers reach this node ("http://10.0.0.1:5000").
	Self string
	// Peers are the other nodes; Self may be among them (it is skipped),
	// so every node can share one list.
	Peers []string
	// Secret is the shared HMAC key (at least 16 bytes).
	Secret []byte
	// PingInterval is how often each peer is pinged. Default 2s.
	PingInterval time.Duration
	// PingTimeout bounds one ping. Default 2s.
	PingTimeout time.Duration
	// DialTimeout bounds connecting to a peer. Default 2s.
	DialTimeout time.Duration
	// HeaderTimeout bounds waiting for an owner's response headers, which
	// it sends once its own fill has started: longer than the owner may
	// wait for its upstream's (30s, then retries). Default 90s. A peer
	// that stops answering pings is given up on sooner (markDown).
	HeaderTimeout time.Duration
	// StallTimeout is how long a read of an owner's body may wait for
	// bytes before this node gives up on it, marks it down and resumes the
	// download elsewhere: longer than an owner may itself wait on its
	// upstream (its body guard, 60s, then a resume's 30s for headers), so
	// that an owner waiting on a slow upstream is not taken for a stuck
	// one. Default 2m.
	StallTimeout time.Duration
	// MaxSkew is how far a peer request's timestamp may be from this
	// node's clock, and how long its nonce is remembered. Default 30s.
	MaxSkew time.Duration
	// ServingFor is how long a digest a peer asked for is filled by this
	// node itself rather than forwarded. Default 1h.
	ServingFor time.Duration
	Logger     *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
	// CAFile adds PEM CA certificates to the system's for https peers
	// (a site CA, or the peers' self-signed certificates).
	CAFile string
	// Transport, when set, replaces the HTTP transport to peers (tests).
	Transport http.RoundTripper
}

// Node is this mirror's membership of a cluster: who owns what, the peer
// health checks, and the signing of peer requests.
type Node struct {
	o      Options
	log    *slog.Logger
	signer *signer
	health *health
	client *http.Client

	served, forwarded, fallbacks, rejected atomic.Int64

	mu       sync.Mutex
	serving  map[digest.Digest]time.Time // asked by a peer: fill it here, until
	forwards map[digest.Digest]map[*forward]struct{}
}

// forward is one request for a blob in flight to an owner.
type forward struct {
	peer   string
	cancel context.CancelCauseFunc
}

// Why a forward is cut, besides errAskedByPeer: each makes the download
// resume from the next source.
var (
	// errPeerDown: the owner was marked down (it failed a ping, or another
	// request to it failed) while this forward ran.
	errPeerDown = errors.New("cluster: the owner was marked down")
	// errPeerStalled: the owner's body sent nothing for StallTimeout.
	errPeerStalled = errors.New("cluster: the owner's body stalled")
	// errOwnerCorrupt: the owner sent a whole body that was not the digest
	// (its copy is damaged).
	errOwnerCorrupt = errors.New("cluster: the owner sent content that is not the digest")
)

// errAskedByPeer cuts a forward when a peer asks this node for the same
// digest: the views disagree, and this node fills it itself.
var errAskedByPeer = errors.New("cluster: a peer asked this node for the digest it was forwarding")

// maxServing bounds the digests remembered as asked for by a peer.
const maxServing = 1 << 14

// New checks o and returns a Node; Run starts its health checks.
func New(o Options) (*Node, error) {
	self, err := normalizeURL(o.Self)
	if err != nil {
		return nil, fmt.Errorf("cluster: self: %w", err)
	}
	var peers []string
	for _, p := range o.Peers {
		u, err := normalizeURL(p)
		if err != nil {
			return nil, fmt.Errorf("cluster: peer: %w", err) // err names the URL
		}
		peers = append(peers, u)
	}
	if len(o.Secret) < 16 {
		return nil, errors.New("cluster: the shared secret must be at least 16 bytes")
	}
	setDefault(&o.PingInterval, 2*time.Second)
	setDefault(&o.PingTimeout, 2*time.Second)
	setDefault(&o.DialTimeout, 2*time.Second)
	setDefault(&o.HeaderTimeout, 90*time.Second)
	setDefault(&o.StallTimeout, 2*time.Minute)
	setDefault(&o.MaxSkew, 30*time.Second)
	setDefault(&o.ServingFor, time.Hour)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Self = self
	tr := o.Transport
	if tr == nil {
		tlsConf, err := upstream.TLSConfig(o.CAFile, false)
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		tr = &http.Transport{
			TLSClientConfig:       tlsConf,
			Proxy:                 nil, // peers are reached directly, never through HTTP_PROXY
			DialContext:           (&net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: o.HeaderTimeout,
			DisableCompression:    true, // blob bytes as they are
			ForceAttemptHTTP2:     false,
		}
	}
	n := &Node{
		o:        o,
		log:      o.Logger.With("component", "cluster"),
		signer:   newSigner(o.Secret, o.MaxSkew, o.Now),
		health:   newHealth(self, peers, o.Now),
		client:   &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		serving:  map[digest.Digest]time.Time{},
		forwards: map[digest.Digest]map[*forward]struct{}{},
	}
	return n, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// normalizeURL accepts http(s)://host[:port] with nothing after it but an
// optional slash, and returns it without the slash.
func normalizeURL(s string) (string, error) {
	u, err := upstream.CheckBaseURL(s)
	if err != nil {
		return "", err
	}
	return u.Scheme + "://" + strings.ToLower(u.Host), nil
}

// Self is this node's URL as peers reach it.
func (n *Node) Self() string { return n.o.Self }

// Owner returns the node that owns d in this node's current view.
func (n *Node) Owner(d digest.Digest) string { return Owner(d.String(), n.health.nodes()) }

// Run pings the peers every PingInterval until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	t := time.NewTicker(n.o.PingInterval)
	defer t.Stop()
	for {
		n.PingAll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// PingAll pings every peer once, in parallel, and waits for the answers.
func (n *Node) PingAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range n.health.peerURLs() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.ping(ctx, p); err != nil {
				n.markDown(p, err)
			} else if n.health.up(p) {
				n.log.Info("peer up", "peer", p)
			}
		}()
	}
	wg.Wait()
}

func (n *Node) ping(ctx context.Context, peer string) error {
	ctx, cancel := context.WithTimeout(ctx, n.o.PingTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, peer+PingPath, nil)
	if err != nil {
		return err
	}
	req.Header.Set(Header, n.signer.sign(http.MethodGet, PingPath))
	resp, err := n.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ping answered %s", resp.Status)
	}
	return nil
}

// The downloads in flight to a peer going down are cut: a peer that stops
// answering (a frozen process, a partition) would otherwise hold them,
// and every client waiting on them, until a timeout measured in hours.
func (n *Node) markDown(peer string, err error) {
	if !n.health.down(peer, err) {
		return
	}
	n.log.Warn("peer down: its digests go to the next owner until it answers a ping", "peer", peer, "err", err)
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, fs := range n.forwards {
		for f := range fs {
			if f.peer == peer {
				f.cancel(errPeerDown)
			}
		}
	}
}

// Verify checks a request's peer signature. header looks up a request
// header by name. It returns ok false (and no error) when the request
// carries no peer header; an error wrapping ErrBadSignature when it
// carries one that does not check out.
func (n *Node) Verify(method, uri string, header func(name string) string) (ok bool, err error) {
	v := header(Header)
	if v == "" {
		return false, nil
	}
	if err := n.signer.verify(method, uri, v); err != nil {
		n.rejected.Add(1)
		return false, err
	}
	return true, nil
}

// Serving records that a verified peer asked this node for blob d: this
// node fills d itself (from its own sources, never another peer) for
// ServingFor, and a forward of d in flight here is cut so that its fill
// resumes from upstream.
func (n *Node) Serving(d digest.Digest) {
	n.served.Add(1)
	n.fillHere(d, errAskedByPeer)
}

// fillHere makes this node fill d from its own sources for ServingFor, and
// cuts the forwards of d in flight with cause.
func (n *Node) fillHere(d digest.Digest, cause error) {
	now := n.o.Now()
	n.mu.Lock()
	if len(n.serving) >= maxServing {
		for k, until := range n.serving {
			if !now.Before(until) || len(n.serving) >= maxServing {
				delete(n.serving, k)
			}
		}
	}
	n.serving[d] = now.Add(n.o.ServingFor)
	cut := n.forwards[d]
	delete(n.forwards, d)
	n.mu.Unlock()
	for f := range cut {
		f.cancel(cause)
	}
}

// forwardTo returns the owner to ask for d, or "" when this node fills d
// from its own sources (it owns d, or a peer asked it for d).
func (n *Node) forwardTo(d digest.Digest) string {
	n.mu.Lock()
	until, asked := n.serving[d]
	n.mu.Unlock()
	if asked && n.o.Now().Before(until) {
		return ""
	}
	if owner := n.Owner(d); owner != n.o.Self {
		return owner
	}
	return ""
}

func (n *Node) track(d digest.Digest, f *forward) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.forwards[d] == nil {
		n.forwards[d] = map[*forward]struct{}{}
	}
	n.forwards[d][f] = struct{}{}
}

func (n *Node) untrack(d digest.Digest, f *forward) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.forwards[d], f)
	if len(n.forwards[d]) == 0 {
		delete(n.forwards, d)
	}
}

// Stats are the cluster's counters and the peers' health.
type Stats struct {
	// Served counts blob requests from peers this node answered.
	Served int64
	// Forwarded counts blob downloads an owner answered for this node.
	Forwarded int64
	// Fallbacks counts downloads that went to this node's own sources
	// because the owner did not answer (or cut the body).
	Fallbacks int64
	// Rejected counts peer requests refused for their signature.
	Rejected int64
	Peers    []PeerState
}

// Stats reports the counters now.
func (n *Node) Stats() Stats {
	return Stats{
		Served:    n.served.Load(),
		Forwarded: n.forwarded.Load(),
		Fallbacks: n.fallbacks.Load(),
		Rejected:  n.rejected.Load(),
		Peers:     n.health.states(),
	}
}
