package proxy

import (
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
)

// A request's metric series and a hot manifest's noted sizes are found
// without a lock once known: both are answered while their mutex is held.
func TestKnownSeriesAndSizesTakeNoLock(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry())
	key := requestKey{endpoint: "manifest", outcome: OutcomeHit, status: 200, registry: "docker.io"}
	known := m.requestSeriesFor(key)
	var sizes knownSizes
	manifest := digest.FromString("manifest")
	sizes.note("docker.io", "library/a", manifest, []byte(`{"layers":[]}`))

	m.seriesMu.Lock()
	defer m.seriesMu.Unlock()
	sizes.mu.Lock()
	defer sizes.mu.Unlock()
	done := make(chan bool)
	go func() {
		same := m.requestSeriesFor(key) == known
		sizes.note("docker.io", "library/a", manifest, []byte(`{"layers":[]}`))
		done <- same
	}()
	select {
	case same := <-done:
		if !same {
			t.Fatal("a known label set got new series")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a known series or noted manifest waited for a mutex")
	}
}
