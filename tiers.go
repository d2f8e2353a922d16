package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/regmirror/regmirror/cluster"
	"github.com/regmirror/regmirror/proxy"
)

// tierDeps is what the tiers in front of the upstreams need from the rest
// of the app.
type tierDeps struct {
	metrics *prometheus.Registry
	log     *slog.Logger
}

// tiers is what several nodes share (README "Running several nodes"), in
// front of each registry's upstream. Without [cluster] it changes nothing.
type tiers struct {
	ups   []proxy.Upstream
	peers proxy.Peers // nil without [cluster]
	// run keeps the tiers' background work going until ctx ends.
	run func(ctx context.Context) error
	// close releases them, after the proxy has shut down.
	close func()
}

// composeTiers puts the tiers in front of each upstream, in the order a
// fill asks them: (L1, the cache) → the digest's owner peer → upstream.
func composeTiers(cfg config, d tierDeps, ups []proxy.Upstream) (*tiers, error) {
	t := &tiers{ups: ups, run: func(context.Context) error { return nil }, close: func() {}}
	if cfg.Cluster != nil {
		o, err := cfg.Cluster.options()
		if err != nil {
			return nil, err
		}
		o.Logger = d.log
		node, err := cluster.New(o)
		if err != nil {
			return nil, err
		}
		wrapped := make([]proxy.Upstream, len(t.ups))
		for i, up := range t.ups {
			wrapped[i] = node.Wrap(up)
		}
		t.ups, t.peers, t.run = wrapped, node, node.Run
		registerClusterMetrics(d.metrics, node)
		d.log.Info("cluster member", "self", node.Self(), "peers", len(cfg.Cluster.Peers))
	}
	return t, nil
}

// registerClusterMetrics exports the node's counters and peer health, read
// at scrape time.
func registerClusterMetrics(reg *prometheus.Registry, n *cluster.Node) {
	counter := func(name, help string, f func(cluster.Stats) int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(n.Stats())) }))
	}
	counter("regmirror_cluster_peer_requests_served_total", "Blob requests from peers this node answered (as their owner).",
		func(s cluster.Stats) int64 { return s.Served })
	counter("regmirror_cluster_peer_requests_forwarded_total", "Blob downloads this node got from the digest's owner peer.",
		func(s cluster.Stats) int64 { return s.Forwarded })
	counter("regmirror_cluster_peer_fallbacks_total", "Downloads that went to this node's own sources because the owner peer did not answer or cut the body.",
		func(s cluster.Stats) int64 { return s.Fallbacks })
	counter("regmirror_cluster_peer_requests_rejected_total", "Peer requests refused for their signature (wrong key, stale, replayed).",
		func(s cluster.Stats) int64 { return s.Rejected })
	reg.MustRegister(peerCollector{n})
}

// peerCollector reports each peer's health: 1 up, 0 down.
type peerCollector struct{ n *cluster.Node }

var peerUpDesc = prometheus.NewDesc("regmirror_cluster_peer_up", "Whether a peer counts for ownership (answered its last ping, no error since).", []string{"peer"}, nil)

func (c peerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- peerUpDesc }

func (c peerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.n.Stats().Peers {
		v := 0.0
		if p.Up {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(peerUpDesc, prometheus.GaugeValue, v, p.URL)
	}
}
