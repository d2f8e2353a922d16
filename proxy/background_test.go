package proxy

import (
	"net/http"
	"sync"
	"testing"

	"github.com/regmirror/regmirror/internal/testupstream"
)

// TestBackgroundStopsStartingWork: work started before the stop is waited
// for; none starts after it, however the two race (a WaitGroup that grows
// while it is waited on may panic, or be waited on no more).
func TestBackgroundStopsStartingWork(t *testing.T) {
	for range 200 {
		var b background
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if b.start() {
					b.done()
				}
			}()
		}
		b.stopAndWait()
		if b.start() {
			t.Fatal("work started after the stop")
		}
		wg.Wait()
	}
}

// TestMissAfterShutdown: a request that reaches the handler once Shutdown
// has stopped the fills (a keep-alive connection past the shutdown
// timeout) is answered 503 in registry JSON and starts no fill.
func TestMissAfterShutdown(t *testing.T) {
	up := testupstream.Start(t)
	_, d := up.PushLargeBlobImage(t, "library/x", "latest", 1<<10)
	s, _, _ := serverInFrontOf(t, up.URL())
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	resp := serveOnce(s, http.MethodGet, "/v2/library/x/blobs/"+d.String(), "127.0.0.1")
	if resp.StatusCode() != http.StatusServiceUnavailable || len(s.fills.fills) != 0 {
		t.Fatalf("%d %s, %d fills", resp.StatusCode(), resp.Body(), len(s.fills.fills))
	}
}
