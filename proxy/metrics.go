package proxy

import (
	"errors"
	"maps"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/regmirror/regmirror/upstream"
)

// metrics are the proxy's Prometheus collectors. With no registry they are
// still updated (cheaply) but never exported. Every metric that concerns
// one upstream carries a "registry" label (empty for requests that name
// none, like /metrics itself); the names and the older labels are those of
// the first releases, so queries that sum over registry keep working.
type metrics struct {
	requests         *prometheus.CounterVec
	requestDuration  *prometheus.HistogramVec
	bytesServed      *prometheus.CounterVec
	upstream         *prometheus.CounterVec
	upstreamDuration *prometheus.HistogramVec
	upstreamBytes    *prometheus.CounterVec
	fills            *prometheus.CounterVec
	fillsInProgress  prometheus.Gauge
	staleServed      *prometheus.CounterVec
	// Tag policy (tagpolicy.go).
	immutableMoved prometheus.Counter
	background     *prometheus.CounterVec
	// Blobs streamed without caching (passthrough.go).
	passThroughs *prometheus.CounterVec

	// series is the requestKey → series table, copied on write (a new
	// label set is rare and bounded): a lookup writes no shared memory,
	// where a read lock is a counter that every request on every core
	// writes twice.
	series   atomic.Pointer[map[requestKey]*requestSeries]
	seriesMu sync.Mutex // serialises copies
}

// durationBuckets span a cached manifest (sub-millisecond) to a layer of
// many GiB (minutes).
var durationBuckets = []float64{.001, .005, .025, .1, .25, 1, 2.5, 10, 30, 120, 600}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regmirror_requests_total", Help: "Client requests by endpoint, cache outcome, status and registry.",
		}, []string{"endpoint", "cache", "code", "registry"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "regmirror_request_duration_seconds", Help: "Client request durations, body included, by endpoint and registry.",
			Buckets: durationBuckets,
		}, []string{"endpoint", "registry"}),
		bytesServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regmirror_served_bytes_total",
			Help: "Body bytes sent to clients of manifests and blobs, by where they came from (cache, fill: a download in progress, upstream: not cached) and registry.",
		}, []string{"source", "registry"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regmirror_upstream_requests_total", Help: "Requests to upstream registries by kind, result and registry.",
		}, []string{"kind", "result", "registry"}),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "regmirror_upstream_request_duration_seconds", Help: "Upstream request durations until the answer's headers (a blob body streams after), by kind and registry.",
			Buckets: durationBuckets,
		}, []string{"kind", "registry"}),
		upstreamBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regmirror_upstream_bytes_total", Help: "Body bytes downloaded from upstream registries (manifests, tag lists, blobs).",
		}, []string{"registry"}),
		fills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regmirror_fills_total", Help: "Blob downloads into the cache by result and registry.",
		}, []string{"result", "registry"}),
		fillsInProgress: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "regmirror_fills_in_progress", Help: "Blob downloads running now.",
		}),
		staleServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regmirror_stale_served_total", Help: "Answers served from the cache because upstream could not answer, was marked out or the rate-limit shield was up, by registry.",
		}, []string{"registry"}),
	}
	m.immutableMoved = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "regmirror_immutable_tag_moved_total", Help: "Times upstream showed an immutable tag (tag_policy) pointing elsewhere than the cache.",
	})
	m.background = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "regmirror_tag_background_revalidations_total", Help: "Stale-while-revalidate tag revalidations by result.",
	}, []string{"result"})
	m.passThroughs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "regmirror_passthroughs_total", Help: "Blob downloads streamed to clients without caching (one per digest, shared by its clients), by reason (disk_full, cannot_fit) and registry.",
	}, []string{"reason", "registry"})
	if reg != nil {
		reg.MustRegister(m.passThroughs)
		reg.MustRegister(m.requests, m.requestDuration, m.bytesServed, m.upstream, m.upstreamDuration,
			m.upstreamBytes, m.fills, m.fillsInProgress, m.staleServed)
		reg.MustRegister(m.immutableMoved, m.background)
	}
	return m
}

// request counts a finished client request.
func (m *metrics) request(endpoint string, outcome Outcome, registry string, status int, bytes int64, d time.Duration) {
	rs := m.requestSeriesFor(requestKey{endpoint, outcome, status, registry})
	rs.count.Inc()
	rs.duration.Observe(d.Seconds())
	if rs.stale != nil {
		rs.stale.Inc()
	}
	if rs.served != nil && bytes > 0 {
		rs.served.Add(float64(bytes))
	}
}

// requestKey is one combination of a finished request's labels.
type requestKey struct {
	endpoint string
	outcome  Outcome
	status   int
	registry string
}

// requestSeries are the series one requestKey updates, looked up once:
// a cache hit is answered in microseconds, and three label lookups per
// request were a sixth of its handler's time.
type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
	stale    prometheus.Counter // for a stale answer
	served   prometheus.Counter // body bytes, for manifests and blobs with a source
}

// maxRequestSeries bounds the lookup table; the label values are bounded
// already (configured registries, the statuses and outcomes this package
// answers with), so this only guards against a mistake.
const maxRequestSeries = 4096

func (m *metrics) requestSeriesFor(k requestKey) *requestSeries {
	if table := m.series.Load(); table != nil {
		if rs := (*table)[k]; rs != nil {
			return rs
		}
	}
	label := string(k.outcome)
	if k.outcome == OutcomeNone {
		label = "none"
	}
	rs := &requestSeries{
		count:    m.requests.WithLabelValues(k.endpoint, label, statusLabel(k.status), k.registry),
		duration: m.requestDuration.WithLabelValues(k.endpoint, k.registry),
	}
	if k.outcome == OutcomeStale {
		rs.stale = m.staleServed.WithLabelValues(k.registry)
	}
	if source := servedSource(k.endpoint, k.outcome); source != "" {
		rs.served = m.bytesServed.WithLabelValues(source, k.registry)
	}
	m.seriesMu.Lock()
	defer m.seriesMu.Unlock()
	var table map[requestKey]*requestSeries
	if old := m.series.Load(); old != nil {
		table = *old
	}
	if known := table[k]; known != nil {
		return known
	}
	if len(table) < maxRequestSeries {
		grown := maps.Clone(table)
		if grown == nil {
			grown = make(map[requestKey]*requestSeries)
		}
		grown[k] = rs
		m.series.Store(&grown)
	}
	return rs
}

// servedSource is where the body of an answer came from, for
// regmirror_served_bytes_total, or "" if it is not counted there.
func servedSource(endpoint string, outcome Outcome) string {
	if endpoint != "manifest" && endpoint != "blob" {
		return ""
	}
	switch {
	case outcome.FromCache():
		return "cache"
	case outcome == OutcomeMiss, outcome == OutcomeJoin:
		if endpoint == "blob" {
			return "fill"
		}
		return "upstream"
	case outcome == OutcomeBypass:
		return "upstream"
	}
	return ""
}

func (m *metrics) passThrough(reason, registry string) {
	m.passThroughs.WithLabelValues(reason, registry).Inc()
}

func (m *metrics) backgroundRevalidation(err error) {
	m.background.WithLabelValues(resultLabel(err)).Inc()
}

func (m *metrics) fill(registry string, err error) {
	m.fills.WithLabelValues(resultLabel(err), registry).Inc()
}

func resultLabel(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, upstream.ErrNotFound):
		return "not_found"
	case errors.Is(err, upstream.ErrRateLimited):
		return "rate_limited"
	case errors.Is(err, upstream.ErrUnavailable):
		return "unavailable"
	}
	return "error"
}

// statsUpstream is the optional Upstream side that reports the registry's
// own figures (token exchanges, Docker Hub's rate-limit headers).
type statsUpstream interface {
	Stats() upstream.Stats
}

// registryCollector reads, at scrape time, what the proxy and the upstreams
// know of each registry now.
type registryCollector struct {
	s *Server

	remaining, limit, tokens, tokenFailures, out, shield, buildInfo *prometheus.Desc
}

func newRegistryCollector(s *Server) *registryCollector {
	reg := []string{"registry"}
	return &registryCollector{
		s: s,
		remaining: prometheus.NewDesc("regmirror_upstream_ratelimit_remaining",
			"Pulls left in the registry's rate-limit window, from its RateLimit-Remaining header (Docker Hub); absent until a registry sends it.", reg, nil),
		limit: prometheus.NewDesc("regmirror_upstream_ratelimit_limit",
			"The registry's pull budget per window, from its RateLimit-Limit header (Docker Hub); absent until a registry sends it.", reg, nil),
		tokens: prometheus.NewDesc("regmirror_upstream_token_fetches_total",
			"Bearer token exchanges with the registry's token server.", reg, nil),
		tokenFailures: prometheus.NewDesc("regmirror_upstream_token_failures_total",
			"Bearer token exchanges that failed.", reg, nil),
		out: prometheus.NewDesc("regmirror_upstream_outage",
			"1 while the registry is marked out after failing to answer (its cached tags are served stale), else 0.", reg, nil),
		shield: prometheus.NewDesc("regmirror_upstream_ratelimit_shield",
			"1 while the registry's remaining pull budget is below server.ratelimit_reserve (expired tags are served stale), else 0.", reg, nil),
		buildInfo: prometheus.NewDesc("regmirror_build_info",
			"Always 1; the labels say which regmirror runs.", []string{"version", "go_version"}, nil),
	}
}

func (c *registryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.remaining, c.limit, c.tokens, c.tokenFailures, c.out, c.shield, c.buildInfo} {
		ch <- d
	}
}

func (c *registryCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	ch <- prometheus.MustNewConstMetric(c.buildInfo, prometheus.GaugeValue, 1, s.opts.Operator.Version, runtime.Version())
	now := s.opts.Now()
	for _, name := range s.registryNames() {
		out := 0.0
		if s.health.out(name, now) {
			out = 1
		}
		ch <- prometheus.MustNewConstMetric(c.out, prometheus.GaugeValue, out, name)
		su, ok := s.plain[name].(statsUpstream)
		if !ok {
			continue
		}
		st := su.Stats()
		ch <- prometheus.MustNewConstMetric(c.tokens, prometheus.CounterValue, float64(st.TokenFetches), name)
		ch <- prometheus.MustNewConstMetric(c.tokenFailures, prometheus.CounterValue, float64(st.TokenFailures), name)
		if st.HasRateLimit {
			ch <- prometheus.MustNewConstMetric(c.remaining, prometheus.GaugeValue, float64(st.RateLimit.Remaining), name)
			ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(st.RateLimit.Limit), name)
			shielded := 0.0
			if s.shielded(name) {
				shielded = 1
			}
			ch <- prometheus.MustNewConstMetric(c.shield, prometheus.GaugeValue, shielded, name)
		}
	}
}
