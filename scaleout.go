package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/regmirror/regmirror/cluster"
	"github.com/regmirror/regmirror/proxy"
)

// scaleOut is what several nodes share (README "Running several nodes"):
// the cluster's owner peers, in front of each registry's upstream. Without
// [cluster] it changes nothing.
type scaleOut struct {
	ups   []proxy.Upstream
	peers proxy.Peers // nil without [cluster]
	node  *cluster.Node
}

// newScaleOut composes the tiers in front of each upstream, in the order a
// fill asks them: (L1 is the cache) → the digest's owner peer → upstream.
func newScaleOut(cfg config, ups []proxy.Upstream, reg *prometheus.Registry, log *slog.Logger) (*scaleOut, error) {
	so := &scaleOut{ups: ups}
	if cfg.Cluster == nil {
		return so, nil
	}
	o, err := cfg.Cluster.options()
	if err != nil {
		return nil, err
	}
	o.Logger = log
	node, err := cluster.New(o)
	if err != nil {
		return nil, err
	}
	so.node, so.peers = node, node
	so.ups = make([]proxy.Upstream, len(ups))
	for i, up := range ups {
		so.ups[i] = node.Wrap(up)
	}
	registerClusterMetrics(reg, node)
	log.Info("cluster member", "self", node.Self(), "peers", len(cfg.Cluster.Peers))
	return so, nil
}

// run keeps the peers' health checked until ctx ends.
func (so *scaleOut) run(ctx context.Context) error {
	if so.node == nil {
		return nil
	}
	return so.node.Run(ctx)
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
