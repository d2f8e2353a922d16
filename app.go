package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/proxy"
	"github.com/regmirror/regmirror/upstream"
)

// app is a running mirror: the cache, the upstreams and the proxy, wired.
type app struct {
	cfg   config
	log   *slog.Logger
	store *cache.Store
	proxy *proxy.Server
	ln    net.Listener
}

// newApp opens the cache, builds every component and listens; Run serves.
func newApp(cfg config, log *slog.Logger) (a *app, err error) {
	a = &app{cfg: cfg, log: log}
	a.store, err = cache.Open(cache.Options{Dir: cfg.DataDir, Logger: log})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.store.Close()
		}
	}()
	ups, aliases, err := buildUpstreams(cfg, log)
	if err != nil {
		return nil, err
	}
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.proxy, err = proxy.New(proxy.Options{
		Registries:      ups,
		DefaultRegistry: cfg.DefaultRegistry,
		HostAliases:     aliases,
		Store:           a.store,
		TagTTL:          cfg.TagTTL.Duration,
		Offline:         cfg.Offline,
		FillTimeout:     cfg.Server.FillTimeout.Duration,
		UpstreamTimeout: cfg.Server.UpstreamTimeout.Duration,
		ReadTimeout:     cfg.Server.ReadTimeout.Duration,
		WriteTimeout:    cfg.Server.WriteTimeout.Duration,
		IdleTimeout:     cfg.Server.IdleTimeout.Duration,
		Metrics:         metrics,
		Logger:          log,
	})
	if err != nil {
		return nil, err
	}
	a.ln, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return a, nil
}

func buildUpstreams(cfg config, log *slog.Logger) ([]proxy.Upstream, map[string]string, error) {
	var ups []proxy.Upstream
	aliases := map[string]string{}
	for _, r := range cfg.Registries {
		up, err := upstream.New(upstream.Options{
			Name:               r.Name,
			URL:                r.URL,
			Username:           r.Username,
			Password:           r.Password,
			CAFile:             r.CAFile,
			InsecureSkipVerify: r.InsecureSkipVerify,
			UserAgent:          "regmirror/" + buildVersion(),
			Logger:             log.With("registry", r.Name),
		})
		if err != nil {
			return nil, nil, fmt.Errorf("registry %q: %w", r.Name, err)
		}
		ups = append(ups, up)
		for _, h := range r.HostAliases {
			aliases[h] = r.Name
		}
	}
	return ups, aliases, nil
}

// Addr is the address the mirror listens on.
func (a *app) Addr() string { return a.ln.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully: requests in flight
// finish (up to the shutdown timeout), fills stop, and the cache is closed
// last.
func (a *app) Run(ctx context.Context) error {
	defer a.store.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return a.proxy.Serve(a.ln)
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := withTimeout(a.cfg.Server.ShutdownTimeout.Duration)
		defer cancel()
		a.log.Info("shutting down")
		if err := a.proxy.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
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
