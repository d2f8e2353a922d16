package main

import (
	"context"
	"log/slog"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/cluster"
	"github.com/regmirror/regmirror/proxy"
	"github.com/regmirror/regmirror/s3tier"
)

// tierDeps is what the tiers in front of the upstreams need from the rest
// of the app.
type tierDeps struct {
	metrics *prometheus.Registry
	log     *slog.Logger
	// store is the cache (L1) whose commits the S3 tier uploads; hold
	// protects a digest from eviction until its upload is done.
	store *cache.Store
	hold  func(d digest.Digest) (release func())
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
// fill asks them: (L1, the cache) → L2, the S3 bucket ([s3]) → the digest's
// owner peer ([cluster]) → upstream. Private registries are not read
// through L2: their content is served to a repository only once upstream
// confirmed it there.
func composeTiers(cfg config, d tierDeps, ups []proxy.Upstream) (*tiers, error) {
	var closers []func()
	t := &tiers{ups: ups, run: func(context.Context) error { return nil }, close: func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}}
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
	if cfg.S3 != nil {
		l2, err := openS3(cfg, d.store, d.hold, d.log)
		if err != nil {
			t.close()
			return nil, err
		}
		unsubscribe := d.store.Subscribe(l2)
		closers = append(closers, func() { unsubscribe(); l2.Close() })
		registerS3Metrics(d.metrics, l2)
		private := cfg.privateRegistries()
		// L2 wraps last, outermost: the proxy finds its optional BlobRedirect
		// on the Upstream it holds, and the cluster's wrapper does not pass
		// that method on.
		wrapped := make([]proxy.Upstream, len(t.ups))
		for i, up := range t.ups {
			wrapped[i] = up
			if !private[up.Name()] {
				wrapped[i] = l2.Wrap(up)
			}
		}
		t.ups = wrapped
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

// registerS3Metrics exports the tier's figures, read at scrape time.
func registerS3Metrics(reg *prometheus.Registry, t *s3tier.Tier) {
	if reg == nil {
		return
	}
	stat := func(f func(s3tier.Stats) int64) func() float64 {
		return func() float64 { return float64(f(t.Stats())) }
	}
	gauge := func(name, help string, f func(s3tier.Stats) int64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, stat(f)))
	}
	counter := func(name, help string, f func(s3tier.Stats) int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, stat(f)))
	}
	gauge("regmirror_s3_upload_backlog", "Blobs and tag records waiting to be uploaded to S3.", func(s s3tier.Stats) int64 { return s.Backlog })
	gauge("regmirror_s3_down", "1 while S3 is skipped after a failure.", func(s s3tier.Stats) int64 {
		if s.Down {
			return 1
		}
		return 0
	})
	counter("regmirror_s3_uploads_total", "Objects uploaded to S3.", func(s s3tier.Stats) int64 { return s.Uploads })
	counter("regmirror_s3_uploaded_bytes_total", "Bytes of blobs uploaded to S3.", func(s s3tier.Stats) int64 { return s.UploadedBytes })
	counter("regmirror_s3_upload_already_total", "Uploads found present in S3 (another node made them).", func(s s3tier.Stats) int64 { return s.Already })
	counter("regmirror_s3_upload_failures_total", "Upload attempts that failed (retried when S3 is back).", func(s s3tier.Stats) int64 { return s.Failures })
	counter("regmirror_s3_upload_dropped_total", "Commits not uploaded: queue full, or evicted before their turn.", func(s s3tier.Stats) int64 { return s.Dropped })
	counter("regmirror_s3_hits_total", "Blobs and manifests read from S3.", func(s s3tier.Stats) int64 { return s.Hits })
	counter("regmirror_s3_hit_bytes_total", "Bytes read from S3.", func(s s3tier.Stats) int64 { return s.HitBytes })
	counter("regmirror_s3_misses_total", "Objects asked of S3 and absent.", func(s s3tier.Stats) int64 { return s.Misses })
	counter("regmirror_s3_errors_total", "S3 requests that failed.", func(s s3tier.Stats) int64 { return s.Errors })
	counter("regmirror_s3_corrupt_total", "S3 objects that did not match their digest (deleted).", func(s s3tier.Stats) int64 { return s.Corrupt })
	counter("regmirror_s3_tag_hits_total", "Tags answered from a fresh S3 record.", func(s s3tier.Stats) int64 { return s.TagHits })
	counter("regmirror_s3_stale_tags_total", "Tags answered from an old S3 record while upstream was down.", func(s s3tier.Stats) int64 { return s.StaleTags })
	counter("regmirror_s3_redirects_total", "Blob requests redirected to a presigned S3 URL.", func(s s3tier.Stats) int64 { return s.Redirects })
	counter("regmirror_s3_breaker_opens_total", "Times S3 was marked down.", func(s s3tier.Stats) int64 { return s.BreakerOpens })
}
