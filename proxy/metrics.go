package proxy

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/regmirror/regmirror/upstream"
)

// metrics are the proxy's Prometheus collectors. With no registry they are
// still updated (cheaply) but never exported.
type metrics struct {
	requests        *prometheus.CounterVec
	bytesServed     *prometheus.CounterVec
	servedFromCache prometheus.Counter
	servedFromFill  prometheus.Counter
	upstream        *prometheus.CounterVec
	fills           *prometheus.CounterVec
	fillsInProgress prometheus.Gauge
	staleServed     prometheus.Counter
	// Tag policy (tagpolicy.go).
	immutableMoved prometheus.Counter
	background     *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regmirror_requests_total", Help: "Client requests by endpoint, cache outcome and status.",
		}, []string{"endpoint", "cache", "code"}),
		bytesServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regmirror_served_bytes_total", Help: "Body bytes sent to clients, by where they came from.",
		}, []string{"source"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regmirror_upstream_requests_total", Help: "Requests to upstream registries by kind and result.",
		}, []string{"kind", "result"}),
		fills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regmirror_fills_total", Help: "Blob downloads into the cache by result.",
		}, []string{"result"}),
		fillsInProgress: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "regmirror_fills_in_progress", Help: "Blob downloads running now.",
		}),
		staleServed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regmirror_stale_served_total", Help: "Tags and tag lists served from the cache because upstream could not answer.",
		}),
	}
	m.immutableMoved = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "regmirror_immutable_tag_moved_total", Help: "Times upstream showed an immutable tag (tag_policy) pointing elsewhere than the cache.",
	})
	m.background = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "regmirror_tag_background_revalidations_total", Help: "Stale-while-revalidate tag revalidations by result.",
	}, []string{"result"})
	m.servedFromCache = m.bytesServed.WithLabelValues("cache")
	m.servedFromFill = m.bytesServed.WithLabelValues("fill")
	if reg != nil {
		reg.MustRegister(m.requests, m.bytesServed, m.upstream, m.fills, m.fillsInProgress, m.staleServed)
		reg.MustRegister(m.immutableMoved, m.background)
	}
	return m
}

func (m *metrics) request(endpoint, outcome string, status int, _ int64) {
	if outcome == "" {
		outcome = "none"
	}
	m.requests.WithLabelValues(endpoint, outcome, strconv.Itoa(status)).Inc()
}

func (m *metrics) upstreamRequest(kind string, err error) {
	m.upstream.WithLabelValues(kind, resultLabel(err)).Inc()
}

func (m *metrics) backgroundRevalidation(err error) {
	m.background.WithLabelValues(resultLabel(err)).Inc()
}

func (m *metrics) fill(err error) {
	m.fills.WithLabelValues(resultLabel(err)).Inc()
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
