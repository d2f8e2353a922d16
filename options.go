package main

import (
	"log/slog"
	"time"

	"github.com/regmirror/regmirror/eviction"
	"github.com/regmirror/regmirror/internal/stack"
	"github.com/regmirror/regmirror/proxy"
	"github.com/regmirror/regmirror/upstream"
)

// This file maps the validated config to each component's options: pure
// functions, no disk, no network (see options_test.go).

// stackOptions are the cache stack's options. background: serve loads
// eviction's view after opening, so that a large cache serves at once.
func (c config) stackOptions(log *slog.Logger, background bool) stack.Options {
	minFree, _ := eviction.ParseSize(c.Cache.MinFree) // checked by finish
	scrubRate, _ := parseRate(c.Cache.ScrubRate)      // checked by finish
	return stack.Options{
		Dir:              c.DataDir,
		MaxSize:          c.Cache.MaxSize,
		HighWatermark:    c.Cache.HighWatermark,
		LowWatermark:     c.Cache.LowWatermark,
		MinFree:          minFree,
		MinFreeIsDefault: c.Cache.MinFree == defaultConfig().Cache.MinFree,
		EvictInterval:    c.Cache.EvictInterval.Duration,
		ScrubInterval:    c.Cache.ScrubInterval.Duration,
		ScrubRate:        scrubRate,
		ScrubTrigger:     c.Cache.scrubTrigger,
		Background:       background,
		Logger:           log,
	}
}

// openStack opens the data dir as configured (see stack.Open).
func openStack(cfg config, log *slog.Logger) (*stack.Stack, error) {
	return stack.Open(cfg.stackOptions(log, false))
}

// registryOptions are one configured registry's clients: its own, and its
// mirrors' (tried first, README "Upstream failover").
type registryOptions struct {
	Primary  upstream.Options
	Mirrors  []upstream.Options
	Failover upstream.FailoverOptions
}

// registryOptions are the options of every configured registry's clients.
// A mirror gets its own credentials only; it does not retry (the next
// source is the retry) and waits 10s at most for response headers.
func (c config) registryOptions(log *slog.Logger) []registryOptions {
	ua := "regmirror/" + buildVersion()
	out := make([]registryOptions, 0, len(c.Registries))
	for _, r := range c.Registries {
		ro := registryOptions{Primary: r.endpointAuth.options(upstream.Options{
			Name:      r.Name,
			URL:       r.URL,
			Keychain:  r.keychain(),
			UserAgent: ua,
			Logger:    log.With("registry", r.Name),

			AllowPrivateAddresses: r.allowPrivate,
		})}
		for _, m := range r.Mirrors {
			ro.Mirrors = append(ro.Mirrors, m.endpointAuth.options(upstream.Options{
				Name:                  r.Name,
				URL:                   m.URL,
				Retries:               -1,
				ResponseHeaderTimeout: 10 * time.Second,
				AllowPrivateAddresses: r.allowPrivate,
				UserAgent:             ua,
				Logger:                log.With("registry", r.Name, "mirror", m.URL),
			}))
		}
		if len(ro.Mirrors) > 0 {
			ro.Failover = upstream.FailoverOptions{OutageBackoff: c.Server.OutageBackoff.Duration, Logger: log.With("registry", r.Name)}
		}
		out = append(out, ro)
	}
	return out
}

// hostAliases maps each configured host alias to its registry.
func (c config) hostAliases() map[string]string {
	aliases := map[string]string{}
	for _, r := range c.Registries {
		for _, h := range r.HostAliases {
			aliases[h] = r.Name
		}
	}
	return aliases
}

// proxyOptions are the proxy's options the config decides; serve adds the
// components (registries, store, hooks, admin, metrics, access).
func (c config) proxyOptions(log *slog.Logger) (proxy.Options, error) {
	policy, err := c.tagPolicy()
	if err != nil {
		return proxy.Options{}, err
	}
	minRate, err := c.Server.minUpstreamRate()
	if err != nil {
		return proxy.Options{}, err
	}
	hot, err := c.Cache.hotCacheBytes()
	if err != nil {
		return proxy.Options{}, err
	}
	return proxy.Options{
		DefaultRegistry:     c.DefaultRegistry,
		HostAliases:         c.hostAliases(),
		TagTTL:              c.tagTTL(),
		TagPolicy:           policy,
		Offline:             c.Offline,
		FillTimeout:         c.Server.FillTimeout.Duration,
		UpstreamTimeout:     c.Server.UpstreamTimeout.Duration,
		RevalidateTimeout:   c.Server.RevalidateTimeout.Duration,
		OutageBackoff:       c.Server.OutageBackoff.Duration,
		ReadTimeout:         c.Server.ReadTimeout.Duration,
		WriteTimeout:        c.Server.WriteTimeout.Duration,
		IdleTimeout:         c.Server.IdleTimeout.Duration,
		TLSCertFile:         c.Server.TLSCertFile,
		TLSKeyFile:          c.Server.TLSKeyFile,
		Logger:              log,
		MaxConnections:      c.Server.MaxConnections,
		MaxConnectionsPerIP: c.Server.MaxConnectionsPerIP,

		PrivateRegistries: c.privateRegistries(),

		MinUpstreamRate:       minRate,
		MinUpstreamRateWindow: c.Server.MinUpstreamRateWindow.Duration,
		HotCacheBytes:         hot,
	}, nil
}
