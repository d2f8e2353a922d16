package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/airgap"
	"github.com/regmirror/regmirror/eviction"
	"github.com/regmirror/regmirror/imageref"
	"github.com/regmirror/regmirror/internal/stack"
	"github.com/regmirror/regmirror/proxy"
	"github.com/regmirror/regmirror/upstream"
	"github.com/regmirror/regmirror/watch"
)

// app is a running mirror: the cache with its eviction, the upstreams and
// the proxy, wired.
type app struct {
	cfg   config
	log   *slog.Logger
	cache *stack.Stack
	proxy *proxy.Server
	ln    net.Listener
	// starting answers on ln until Run hands it to the proxy.
	starting *proxy.Startup
	// serving is closed once the proxy itself answers on ln.
	serving chan struct{}
	// watch keeps the [[watch]] images warm (nil: none, or offline).
	watch *watch.Scheduler
	// token is the management token; it also lets the mirror's own
	// preloads through access control.
	token string
	// tiers are the cluster (and S3) in front of the upstreams (tiers.go).
	tiers *tiers
	// ownTLS trusts exactly this server's certificate, for its own pulls
	// through itself (watch list, config pins, a command's local mirror)
	// at an address its certificate need not cover; nil without TLS.
	ownTLS *tls.Config
}

// newApp builds every component, listens and opens the cache; Run serves.
// Everything that can be checked without the data dir is checked before
// it is touched.
func newApp(cfg config, log *slog.Logger) (a *app, err error) {
	a = &app{cfg: cfg, log: log, serving: make(chan struct{})}
	ups, err := buildUpstreams(cfg, log)
	if err != nil {
		return nil, err
	}
	popts, err := cfg.proxyOptions(log)
	if err != nil {
		return nil, err
	}
	ac, err := newAccess(cfg.Auth, log)
	if err != nil {
		return nil, err
	}
	if cfg.Server.TLSCertFile != "" { // a bad pair fails here, before the data dir is touched
		if _, err := tls.LoadX509KeyPair(cfg.Server.TLSCertFile, cfg.Server.TLSKeyFile); err != nil {
			return nil, fmt.Errorf("server.tls_cert_file/tls_key_file: %w", err)
		}
	}
	// Listen first: a port in use fails before the disk is touched, and
	// while the index opens (after a crash the reconcile walks every file)
	// probes get /readyz 503 and clients a clear 503 instead of a refusal.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	starting := proxy.ServeStartup(ln, cfg.Server.TLSCertFile, cfg.Server.TLSKeyFile, log)
	defer func() {
		if err != nil {
			starting.Handover()
			ln.Close()
		}
	}()
	a.ln, a.starting = ln, starting
	a.cache, err = stack.Open(cfg.stackOptions(log, true))
	if err != nil {
		return nil, err
	}
	st := a.cache // a is nil when an error is returned
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	token, err := admin.WriteToken(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	a.token = token
	if err := admin.WriteServerURL(cfg.DataDir, a.url()); err != nil {
		return nil, err
	}
	var certPEM []byte
	if cfg.Server.TLSCertFile != "" {
		if certPEM, err = readCertificates(cfg.Server.TLSCertFile); err != nil {
			return nil, err
		}
		if a.ownTLS, err = trustOwnCertificate(certPEM); err != nil {
			return nil, err
		}
	}
	if err := admin.WriteServerCert(cfg.DataDir, certPEM); err != nil {
		return nil, err
	}
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerEvictionMetrics(metrics, a.cache)
	registerVerifyMetrics(metrics, a.cache.Store)
	// The cluster (and S3) tiers go in front of the upstreams: one call.
	a.tiers, err = composeTiers(cfg, tierDeps{metrics: metrics, log: log, store: a.cache.Store, hold: stack.FillHooks{Evictor: a.cache.Evictor}.Hold}, ups)
	if err != nil {
		return nil, err
	}
	tiers := a.tiers
	defer func() {
		if err != nil {
			tiers.close() // before the cache: its upload workers read it
		}
	}()
	popts.Registries, popts.Peers = a.tiers.ups, a.tiers.peers
	popts.Store = a.cache.Store
	popts.Hooks = stack.FillHooks{Evictor: a.cache.Evictor}
	popts.Admin = admin.Handler(a.cache.Ops, token)
	popts.Metrics = metrics
	popts.Operator = operatorOptions(cfg, a)
	if ac != nil {
		popts.Access = ac
		popts.AdminOpen = admin.OpenHandler(a.cache.Ops)
		popts.ClientCAFile = cfg.Auth.ClientCAFile
		popts.InternalToken = token
	}
	a.proxy, err = proxy.New(popts)
	if err != nil {
		return nil, err
	}
	if !cfg.Offline {
		a.watch = a.newWatch()
		metrics.MustRegister(watchCollector{a})
	}
	// Ready: stop answering "starting" now, before the caller logs that it
	// serves. Connections arriving until Run's Serve accepts them wait in
	// the listen backlog instead of getting a 503.
	starting.Handover()
	return a, nil
}

// buildUpstreams makes one registry client per configured registry, put
// behind its mirrors when it has some (each mirror a client of its own,
// built by the same constructor, so behind the same connection guard).
func buildUpstreams(cfg config, log *slog.Logger) ([]proxy.Upstream, error) {
	var ups []proxy.Upstream
	for _, ro := range cfg.registryOptions(log) {
		up, err := upstream.New(ro.Primary)
		if err != nil {
			return nil, fmt.Errorf("registry %q: %w", ro.Primary.Name, err)
		}
		if len(ro.Mirrors) == 0 {
			ups = append(ups, up)
			continue
		}
		var mirrors []*upstream.Registry
		for _, mo := range ro.Mirrors {
			mr, err := upstream.New(mo)
			if err != nil {
				return nil, fmt.Errorf("registry %q: mirror %s: %w", mo.Name, mo.URL, err)
			}
			mirrors = append(mirrors, mr)
		}
		ups = append(ups, upstream.NewFailover(up, mirrors, ro.Failover))
	}
	return ups, nil
}

// registerEvictionMetrics exports the evictor's counters, read at scrape time.
func registerEvictionMetrics(reg *prometheus.Registry, st *stack.Stack) {
	stat := func(f func(eviction.Stats) int64) func() float64 {
		return func() float64 { return float64(f(st.Evictor.Stats())) }
	}
	gauge := func(name, help string, f func(eviction.Stats) int64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, stat(f)))
	}
	counter := func(name, help string, f func(eviction.Stats) int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, stat(f)))
	}
	gauge("regmirror_cache_bytes", "Bytes of verified content in the cache.", func(s eviction.Stats) int64 { return s.Bytes })
	gauge("regmirror_cache_blobs", "Blobs in the cache.", func(s eviction.Stats) int64 { return s.Blobs })
	gauge("regmirror_cache_pinned_bytes", "Bytes of pinned content.", func(s eviction.Stats) int64 { return s.PinnedBytes })
	gauge("regmirror_cache_budget_bytes", "The cache's byte budget (0: none).", func(s eviction.Stats) int64 {
		if s.MaxBytes == stack.NoBudget {
			return 0
		}
		return s.MaxBytes
	})
	counter("regmirror_evicted_blobs_total", "Blobs evicted.", func(s eviction.Stats) int64 { return s.EvictedBlobs })
	counter("regmirror_evicted_bytes_total", "Bytes evicted.", func(s eviction.Stats) int64 { return s.EvictedBytes })
}

// Addr is the address the mirror listens on.
func (a *app) Addr() string { return a.ln.Addr().String() }

// url is where the mirror answers on this box.
func (a *app) url() string {
	u := serverURL("", a.Addr())
	if a.cfg.Server.TLSCertFile != "" {
		u = "https://" + strings.TrimPrefix(u, "http://")
	}
	return u
}

// Run serves until ctx ends, then shuts down gracefully: requests in flight
// finish (up to the shutdown timeout), fills stop, eviction stops, and the
// cache is closed last.
func (a *app) Run(ctx context.Context) error {
	defer a.cache.Close()
	defer a.tiers.close() // after the proxy's shutdown, before the cache closes
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		a.starting.Handover()
		close(a.serving)
		return a.proxy.Serve(a.ln)
	})
	g.Go(func() error {
		return a.cache.RunEviction(gctx)
	})
	if len(a.cfg.Pin) > 0 {
		g.Go(func() error {
			a.pinConfigured(gctx)
			return nil
		})
	}
	if a.watch != nil {
		g.Go(func() error { return a.watch.Run(gctx) })
	}
	g.Go(func() error { return a.tiers.run(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := withTimeout(a.cfg.Server.ShutdownTimeout.Duration)
		defer cancel()
		a.log.Info("shutting down")
		err := a.proxy.Shutdown(sctx)
		// A stop that came while the mirror was starting (a crash's
		// reconcile can take minutes) may find Serve not yet holding the
		// listener, and Shutdown then has nothing to stop: closing the
		// listener ends Serve either way.
		_ = a.ln.Close()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		} else if err != nil {
			return errShutdownTimeout
		}
		return nil
	})
	err := g.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// pinConfigured applies the config's pin list when the server starts: an
// image the cache holds is pinned as it is; one it does not hold is
// preloaded through this server (default platforms) and pinned, unless
// the mirror is offline. Failures are logged; the server runs on.
func (a *app) pinConfigured(ctx context.Context) {
	var fetch []imageref.Ref
	for _, p := range a.cfg.Pin {
		ref, err := imageref.Parse(p) // validated with the config
		if err != nil {
			continue
		}
		res, err := a.cache.Ops.PinRef(ctx, ref.String())
		switch {
		case err == nil:
			a.log.Info("config pin applied", "image", res.Name, "digest", res.Digest, "blobs", res.Blobs, "not_cached", res.Missing)
		case errors.Is(err, admin.ErrNotCached) && !a.cfg.Offline:
			fetch = append(fetch, ref)
		default:
			a.log.Warn("config pin not applied", "image", ref.String(), "err", err)
		}
	}
	if len(fetch) == 0 {
		return
	}
	plats, _ := airgap.ChoosePlatforms("", false)
	res, err := preloadThrough(ctx, a.target(), fetch, plats, logWriter{a.log}, nil)
	if err != nil || res.Failed > 0 {
		a.log.Warn("config pins: some images could not be fetched; they are pinned once pulled and the server restarted", "failed", res.Failed, "err", err)
	}
}

// target is the running mirror as a command would reach it: its
// operations, and its URL to pull through.
func (a *app) target() *target {
	return &target{Ops: a.cache.Ops, Blobs: admin.Source{Store: a.cache.Store}, Where: "the config's pin list",
		URL: a.url(), Token: a.token, TLS: a.ownTLS, Stack: a.cache, Config: a.cfg, Log: a.log}
}

// logWriter turns lines written to it into log records.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if line != "" {
			w.log.Info("config pins: " + line)
		}
	}
	return len(p), nil
}
