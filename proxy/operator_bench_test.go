package proxy

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/regmirror/regmirror/cache"
)

// BenchmarkRecordExchange is what every finished request pays for the
// per-registry metrics and the status page's figures.
func BenchmarkRecordExchange(b *testing.B) {
	store, err := cache.Open(cache.Options{Dir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	s, err := New(Options{Registries: []Upstream{stubUpstream{"docker.io"}}, Store: store, Metrics: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		ex := &exchange{s: s, start: time.Now(), registry: "docker.io", repo: "library/alpine", ref: "3.20",
			client: "127.0.0.1", endpoint: "blob", outcome: "hit", status: 200}
		for pb.Next() {
			s.recordExchange(ex, time.Now(), 4096)
		}
	})
}
