package proxy

import (
	"errors"
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
	answeredWithoutLock(t, "a known series or noted manifest", func() error {
		same := m.requestSeriesFor(key) == known
		sizes.note("docker.io", "library/a", manifest, []byte(`{"layers":[]}`))
		if !same {
			return errors.New("a known label set got new series")
		}
		return nil
	})
}

// answeredWithoutLock runs answer, which the caller expects to need none
// of the locks it holds, and fails t if answer fails or waits (10 s).
func answeredWithoutLock(t *testing.T, what string, answer func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- answer() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s waited for a mutex", what)
	}
}
