package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"golang.org/x/sync/singleflight"

	"github.com/regmirror/regmirror/imageref"
	"github.com/regmirror/regmirror/internal/logline"
	"github.com/regmirror/regmirror/status"
	"github.com/regmirror/regmirror/tagpolicy"
	"github.com/regmirror/regmirror/upstream"
)

// Upstream is what the proxy needs from one remote registry.
type Upstream interface {
	// Name is the registry as clients name it ("docker.io", "ghcr.io").
	Name() string
	// Repository applies the registry's name defaulting ("alpine" →
	// "library/alpine" on Docker Hub).
	Repository(name string) string
	HeadManifest(ctx context.Context, repo, ref string) (upstream.Descriptor, error)
	GetManifest(ctx context.Context, repo, ref string) ([]byte, upstream.Descriptor, error)
	HeadBlob(ctx context.Context, repo string, d digest.Digest) (int64, error)
	GetBlob(ctx context.Context, repo string, d digest.Digest, offset int64) (*upstream.Blob, error)
	ListTags(ctx context.Context, repo, rawQuery string) (upstream.TagPage, error)
}

// FillHooks lets the cache's owner hear about fills. Hold is called before a
// fill starts writing a digest and its release when the fill ends, so that
// eviction never removes what is being written; NoSpace is called when a
// write fails for lack of disk space and returns true when room was made.
type FillHooks interface {
	Hold(d digest.Digest) (release func())
	NoSpace(ctx context.Context, need int64) bool
}

// Options configures a Server. Zero values take the defaults named.
type Options struct {
	// Registries are the configured upstreams. Only these are ever dialled.
	Registries []Upstream
	// DefaultRegistry answers bare /v2/<name>/... requests, as the Docker
	// daemon sends them. Default "docker.io".
	DefaultRegistry string
	// HostAliases maps a request's Host (lowercase; with its port, or
	// without) to a registry name.
	HostAliases map[string]string
	Store       Store
	Hooks       FillHooks
	// Admin answers /_regmirror/ (management: usage, gc, pins) for clients
	// on loopback only; nil disables it.
	Admin http.Handler

	// PrivateRegistries names registries whose cached content is served to
	// a repository only once it was fetched for it or upstream confirmed it
	// there (see private.go). Default: none; content is shared by digest.
	PrivateRegistries map[string]bool

	// TagTTL is how long a cached tag is served without asking upstream.
	// Default 5m.
	TagTTL time.Duration
	// TagPolicy holds per-tag freshness rules (immutable, ttl,
	// stale_while_revalidate); tags no rule matches get TagTTL. Nil: none.
	TagPolicy *tagpolicy.Policy
	// Offline never dials upstream: tags are served whatever their age and
	// misses answer 404 at once.
	Offline bool
	// FillTimeout bounds one blob download, whoever waits for it. Default 2h.
	FillTimeout time.Duration
	// MinUpstreamRate is the least a blob body from upstream must deliver,
	// in bytes per second averaged over MinUpstreamRateWindow of waiting on
	// it; a slower body is dropped and resumed with a Range request (a few
	// times, then the download fails). Defaults 10 KiB/s and 1m; a negative
	// rate turns the guard off.
	MinUpstreamRate       int64
	MinUpstreamRateWindow time.Duration
	// UpstreamTimeout bounds manifest and tag requests. Default 30s.
	UpstreamTimeout time.Duration
	// RevalidateTimeout bounds the HEAD that revalidates an expired tag,
	// which has the cached manifest to fall back on. Default 5s.
	RevalidateTimeout time.Duration
	// OutageBackoff is how long a registry that failed to answer a
	// revalidation is not asked again: its cached tags are served stale at
	// once meanwhile (a 429's Retry-After, if longer, wins). Default 30s.
	OutageBackoff time.Duration
	// MaxManifestSize caps manifests read into memory. Default 4 MiB.
	MaxManifestSize int64
	// HotCacheBytes bounds the in-memory cache of hot manifests and blob
	// information in front of the Store (hot.go). Default (0)
	// DefaultHotCacheBytes; negative: none.
	HotCacheBytes int64
	// ReadTimeout, WriteTimeout and IdleTimeout configure the HTTP server.
	// Defaults 1m, 1h (a layer of many GiB to a slow client), 2m.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// MaxConnections caps the client connections open at once; one more is
	// answered 503 and closed. Default (0): half the process's descriptor
	// limit, at most 8192. Negative: no cap.
	MaxConnections int
	// MaxConnectionsPerIP caps the connections one client address holds;
	// one more is answered 429 and closed. Default (0): a quarter of
	// MaxConnections. Negative: no cap. Behind a reverse proxy every client
	// has the proxy's address: raise it or turn it off there.
	MaxConnectionsPerIP int
	// MaxFills caps the blob downloads into the cache that run on with no
	// client reading them (fills outlive their clients); while that many
	// run, a request that would start one more is answered 503 with
	// Retry-After. Fills clients read are bounded by the connection caps;
	// joining a running fill is never refused. Default (0)
	// DefaultMaxFills; negative: no cap.
	MaxFills int
	// MaxFillsPerClient is MaxFills for the fills one client address
	// started (answered 429). The mirror's own pulls (internal token) and
	// verified peers are not counted here. Behind a reverse proxy every
	// client has the proxy's address: cancelled pulls of all of them
	// count together there. Default (0) DefaultMaxFillsPerClient;
	// negative: no cap.
	MaxFillsPerClient int
	// PassThroughMemory bounds the memory of the windows of blobs streamed
	// without caching (disk full, or too large to cache); a pass-through
	// that would exceed it is answered 503 with Retry-After. Default (0)
	// DefaultPassThroughMemory; negative: no bound.
	PassThroughMemory int64
	// TLSCertFile and TLSKeyFile, when set, serve HTTPS (PEM files; the
	// certificate file may hold the chain).
	TLSCertFile, TLSKeyFile string
	// ClientCAFile, with TLS, asks clients for a certificate and verifies
	// one if given against these CAs; Access then sees its CN.
	ClientCAFile string
	// Access, when set, decides who may pull what (see access.go); nil:
	// everyone may pull everything. AdminOpen is the management API
	// without its token check, for users Access names admins (over TLS).
	Access    Access
	AdminOpen http.Handler
	// InternalToken, sent as "Authorization: Bearer <token>" from
	// loopback, passes access control (the mirror's own preloads).
	InternalToken string
	// Peers, when set, checks requests signed by the other nodes of a
	// cluster (peer.go); nil: a single node.
	Peers Peers
	// Metrics receives the proxy's Prometheus collectors; nil disables
	// /metrics.
	Metrics *prometheus.Registry
	Logger  *slog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time

	// Operator views (operator.go): the status page, /readyz, the catalog.
	Operator OperatorOptions
}

// Server is a pull-through registry mirror.
type Server struct {
	opts       Options
	log        *slog.Logger
	lines      *logline.Writer // log's fast path for the request line, if it has one
	registries map[string]Upstream
	routes     router // resolves requests to registries (route.go)
	store      Store  // whole, for optional sides found by type assertion
	// The cache as each part uses it (store.go).
	blobs     blobStore
	manifests manifestStore
	tags      tagStore
	links     linkStore
	answers   answerStore
	metrics   *metrics
	guard     *guardMetrics
	conns     *connLimiter
	http      *fasthttp.Server

	// flights collapses concurrent misses of one manifest or tag.
	flights singleflight.Group
	// tagWaits are the tag revalidations running in the foreground now
	// (manifests.go).
	tagWaits tagWaits
	fills    fillGroup
	passes   passGroup  // blobs streamed without caching (passthrough.go)
	sizes    knownSizes // descriptor sizes from manifests served (sizes.go)
	health   upstreamHealth
	// background runs stale-while-revalidate revalidations (tagpolicy.go).
	background backgroundRevalidations

	// fillCtx is the parent of every fill: detached from clients, cancelled
	// only at shutdown.
	fillCtx    context.Context
	stopFills  context.CancelFunc
	fillsAlive background

	metricsHandler   fasthttp.RequestHandler
	adminHandler     fasthttp.RequestHandler
	adminOpenHandler fasthttp.RequestHandler
	accessMetrics    accessMetrics

	// plain are the upstreams as configured; registries wraps them in
	// meters (instrument.go).
	plain  map[string]Upstream
	status *status.Recorder
	shield shieldState

	// diskFullUntil (Unix nanoseconds) is set when a fill failed for lack of
	// space that eviction could not make; until then misses are streamed
	// from upstream without caching instead of starting fills doomed to fail.
	diskFullUntil atomic.Int64
	// listenIP is the one address Serve listens on, nil when it listens on
	// every address (or another kind of listener): see fromThisHost.
	listenIP net.IP
}

// diskFullBackoff is how long misses bypass the cache after a full disk.
const diskFullBackoff = 30 * time.Second

func (s *Server) diskFull() bool { return s.opts.Now().UnixNano() < s.diskFullUntil.Load() }

// hold keeps eviction off d while it is written (FillHooks.Hold); the
// release does nothing without hooks.
func (s *Server) hold(d digest.Digest) (release func()) {
	if s.opts.Hooks == nil {
		return func() {}
	}
	return s.opts.Hooks.Hold(d)
}

// makeRoom asks the cache's owner to free need bytes (0: whatever it can)
// after a write failed for lack of space; it reports whether it did.
func (s *Server) makeRoom(need int64) bool {
	if s.opts.Hooks == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(s.fillCtx, s.opts.UpstreamTimeout)
	defer cancel()
	ok := s.opts.Hooks.NoSpace(ctx, need)
	s.log.Warn("disk full while caching", "need", need, "room_made", ok)
	return ok
}

// New builds a Server; it does not listen yet.
func New(o Options) (*Server, error) {
	if o.Store == nil {
		return nil, errors.New("proxy: a Store is required")
	}
	if len(o.Registries) == 0 {
		return nil, errors.New("proxy: at least one upstream registry is required")
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		return nil, errors.New("proxy: TLS needs both a certificate and a key file")
	}
	o = withDefaults(o)
	hot := newHotStore(o.Store, o.HotCacheBytes)
	s := &Server{
		opts:       o,
		log:        o.Logger,
		lines:      logline.LinesOf(o.Logger),
		registries: make(map[string]Upstream, len(o.Registries)),
		plain:      make(map[string]Upstream, len(o.Registries)),
		store:      o.Store,
		blobs:      hot,
		manifests:  hot,
		tags:       o.Store,
		links:      o.Store,
		answers:    o.Store,
	}
	for _, r := range o.Registries {
		if _, dup := s.registries[r.Name()]; dup {
			return nil, fmt.Errorf("proxy: registry %q configured twice", r.Name())
		}
		s.registries[r.Name()] = s.meter(r)
		s.plain[r.Name()] = r
	}
	var err error
	if s.routes, err = newRouter(s.registries, o.DefaultRegistry, o.HostAliases); err != nil {
		return nil, err
	}
	s.metrics = newMetrics(o.Metrics)
	s.guard = newGuardMetrics(o.Metrics)
	s.initOperator()
	if o.Metrics != nil {
		s.metricsHandler = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(o.Metrics, promhttp.HandlerOpts{}))
	}
	if o.Admin != nil {
		s.adminHandler = fasthttpadaptor.NewFastHTTPHandler(o.Admin)
	}
	maxConns, perIP := connCaps(o.MaxConnections, o.MaxConnectionsPerIP, descriptorLimit())
	s.conns = newConnLimiter(maxConns, perIP, o.TLSCertFile != "", o.Logger, s.guard)
	s.fillCtx, s.stopFills = context.WithCancel(context.Background())
	s.fills.fills = make(map[digest.Digest]*fill)
	s.http = s.newHTTPServer()
	if err := s.setupAccess(); err != nil {
		return nil, err
	}
	return s, nil
}

// withDefaults fills in the defaults Options documents.
func withDefaults(o Options) Options {
	if o.DefaultRegistry == "" {
		o.DefaultRegistry = imageref.DockerHub
	}
	setDefault(&o.TagTTL, 5*time.Minute)
	setDefault(&o.FillTimeout, 2*time.Hour)
	setDefault(&o.UpstreamTimeout, 30*time.Second)
	setDefault(&o.MinUpstreamRateWindow, DefaultMinUpstreamRateWindow)
	if o.MinUpstreamRate == 0 {
		o.MinUpstreamRate = DefaultMinUpstreamRate
	}
	setDefault(&o.RevalidateTimeout, 5*time.Second)
	setDefault(&o.OutageBackoff, 30*time.Second)
	setDefault(&o.ReadTimeout, time.Minute)
	setDefault(&o.WriteTimeout, time.Hour)
	setDefault(&o.IdleTimeout, 2*time.Minute)
	if o.MaxManifestSize <= 0 {
		o.MaxManifestSize = 4 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// newHTTPServer is the fasthttp server that answers through s.handle.
func (s *Server) newHTTPServer() *fasthttp.Server {
	o := s.opts
	return &fasthttp.Server{
		Handler:                       s.handle,
		Name:                          "regmirror",
		ReadTimeout:                   o.ReadTimeout,
		WriteTimeout:                  o.WriteTimeout,
		IdleTimeout:                   o.IdleTimeout,
		MaxRequestBodySize:            64 << 10, // pulls carry no body; pushes are refused
		ReadBufferSize:                maxHeaderSize,
		ErrorHandler:                  s.httpLayerError,
		ConnState:                     s.conns.connState,
		DisableHeaderNamesNormalizing: false,
		NoDefaultContentType:          true,
		CloseOnShutdown:               true,
		Logger:                        fasthttpLogger{o.Logger},
	}
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// Serve answers requests on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Debug("connection caps", "max_connections", describeCaps(s.conns.maxConns), "max_connections_per_ip", describeCaps(s.conns.maxPerIP))
	if a, ok := ln.Addr().(*net.TCPAddr); ok && !a.IP.IsUnspecified() {
		s.listenIP = a.IP
	}
	ln = &guardedListener{Listener: ln, lim: s.conns,
		deadlineSlack: deadlineSlack(s.opts.ReadTimeout, s.opts.WriteTimeout, s.opts.IdleTimeout)}
	if s.opts.TLSCertFile != "" {
		return s.http.ServeTLS(ln, s.opts.TLSCertFile, s.opts.TLSKeyFile)
	}
	return s.http.Serve(ln)
}

// Shutdown stops accepting requests, waits for those in flight (up to ctx),
// then cancels and waits for fills, so that the cache can be closed after it.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.ShutdownWithContext(ctx)
	s.stopFills()
	s.fillsAlive.stopAndWait()
	return err
}

// Handler exposes the request handler, for tests that serve it themselves.
func (s *Server) Handler() fasthttp.RequestHandler { return s.handle }

type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug("http server", "msg", fmt.Sprintf(format, args...))
}

// exchange carries one request's state from the handler to its log line,
// which for a streamed body is written when fasthttp closes the stream.
type exchange struct {
	s         *Server
	start     time.Time
	method    string
	path      string
	registry  string
	repo      string
	ref       string
	client    string
	userAgent string
	asked     string // the registry a request named that none answered (refused)
	user      string // who access control says the client is
	endpoint  string
	outcome   Outcome
	resource  resource // what the request's "not found" is about
	status    int
	errorCode string // the registry error code answered, if any
	detail    string // the whole error behind it
	fill      *fill  // the fill the client reads, until done (follow)
	logged    atomic.Bool
}

// done logs and counts the exchange, once (requestlog.go writes the line).
func (e *exchange) done(bytes int64, err error) {
	if e.logged.Swap(true) {
		return
	}
	e.unfollow()
	// The start's wall clock moved on by the monotonic clock: one clock
	// read where time.Now takes two.
	now := e.start.Add(time.Since(e.start))
	e.s.logRequest(e, now, bytes, err)
	e.s.recordExchange(e, now, bytes)
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	ex := newExchange(s, ctx)
	defer s.recoverPanic(ctx, ex)
	r, err := s.dispatch(ctx, ex)
	s.finish(ctx, ex, r, err)
	ex.release(r) // not reached on a panic: that exchange is left to the collector
}

// dispatch routes one request to its handler: the operator views, metrics,
// the health probe, management, else the registry API.
func (s *Server) dispatch(ctx *fasthttp.RequestCtx, ex *exchange) (reply, error) {
	if h := s.operatorView(ex.path); h != nil {
		return h(ctx, ex)
	}
	switch ex.path {
	case "/metrics":
		if s.metricsHandler != nil {
			ex.endpoint = "metrics"
			s.metricsHandler(ctx)
			return delegated, nil
		}
	case "/healthz":
		ex.endpoint = "health"
		return bodyReply("text/plain", []byte("ok\n")), nil
	}
	if s.opts.Peers != nil && ex.path == peerPingPath {
		return s.servePeerPing(ctx, ex)
	}
	if strings.HasPrefix(ex.path, adminPrefix) && s.adminHandler != nil {
		ex.endpoint = "admin"
		return s.serveAdmin(ctx, ex)
	}
	return s.serveRegistry(ctx, ex)
}

// serveRegistry answers the registry API (/v2/): it parses and resolves
// the request, asks access control, then hands it to the endpoint's
// handler.
func (s *Server) serveRegistry(ctx *fasthttp.RequestCtx, ex *exchange) (reply, error) {
	ctx.Response.Header.SetCanonical(hdrAPIVersion, valRegistryV2)
	p, err := parsePath(ex.path)
	if err != nil {
		ex.endpoint = "unknown"
		return reply{}, err
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ex.endpoint = "write"
		return reply{}, fmt.Errorf("%w: %s %s", errUnsupportedMethod, ex.method, ex.path)
	}
	ex.endpoint, ex.resource = endpointName(p.endpoint), resourceOf(p.endpoint)
	switch p.endpoint {
	case endpointBase:
		return s.serveBase(ctx, ex)
	case endpointUpload:
		return reply{}, fmt.Errorf("%w: uploads", errUnsupportedMethod)
	}
	rq, err := s.routes.resolve(p, string(ctx.QueryArgs().Peek("ns")), s.routes.hostOf(ctx))
	if err != nil {
		// Who may not pull learns nothing more than that.
		if aerr := s.authorize(ctx, ex, "", ""); aerr != nil {
			return reply{}, aerr
		}
		return reply{}, err
	}
	ex.registry = rq.up.Name()
	ex.repo, ex.ref = rq.repo, rq.ref.String()
	if err := s.checkPeer(ctx, ex, rq, p.endpoint); err != nil {
		return reply{}, err
	}
	if err := s.authorize(ctx, ex, rq.registry, rq.repo); err != nil {
		return reply{}, err
	}
	switch p.endpoint {
	case endpointManifest:
		return s.serveManifest(ctx, ex, rq)
	case endpointBlob:
		return s.serveBlob(ctx, ex, rq)
	case endpointTags:
		return s.serveTags(ctx, ex, rq)
	default: // endpointReferrers
		return s.serveReferrers(ctx, ex, rq)
	}
}

// serveBase answers /v2/, the API version check, for whoever may pull from
// the registry the request names.
func (s *Server) serveBase(ctx *fasthttp.RequestCtx, ex *exchange) (reply, error) {
	// Who is refused learns nothing more, such as which registries are
	// configured (the ?ns= check's answer).
	if err := s.authorize(ctx, ex, "", ""); err != nil {
		return reply{}, err
	}
	if _, err := s.routes.registry(string(ctx.QueryArgs().Peek("ns")), "", s.routes.hostOf(ctx)); err != nil {
		return reply{}, err
	}
	return bodyReply("application/json", []byte("{}")), nil
}

func endpointName(e endpoint) string {
	switch e {
	case endpointBase:
		return "base"
	case endpointUpload:
		return "write"
	case endpointManifest:
		return "manifest"
	case endpointBlob:
		return "blob"
	case endpointTags:
		return "tags"
	case endpointReferrers:
		return "referrers"
	}
	return "other"
}

// resourceOf is what an endpoint's "not found" is about: a referrers
// subject is a manifest.
func resourceOf(e endpoint) resource {
	switch e {
	case endpointManifest, endpointReferrers:
		return resourceManifest
	case endpointBlob:
		return resourceBlob
	case endpointTags:
		return resourceRepository
	}
	return resourceNone
}

// adminPrefix is where management requests go (see package admin).
const adminPrefix = "/_regmirror/"

// fromThisHost reports whether the request comes from this machine: over
// loopback, or, for a server that listens on one address only
// ("10.0.0.5:5000", where its own commands reach it), from that address
// to itself. TCP cannot complete a connection whose source address a
// remote host forged to be the server's own. A server listening on every
// address is reached over loopback by its commands, so a relay on the box
// that connects from one of its addresses does not count.
func (s *Server) fromThisHost(ctx *fasthttp.RequestCtx) bool {
	ip := ctx.RemoteIP()
	return ip != nil && (ip.IsLoopback() || s.listenIP != nil && ip.Equal(s.listenIP) && ip.Equal(ctx.LocalIP()))
}

// Streamed bodies release their descriptors in Close, which fasthttp calls
// when the response ends or the client goes away.
var (
	_ io.Closer = (*fileBody)(nil)
	_ io.Closer = (*follower)(nil)
	_ io.Closer = (*passReader)(nil)
)
