package proxy

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/regmirror/regmirror/internal/testupstream"
)

// TestFillCaps: fills run on after their clients hang up, so they are
// capped while they run: per client address (429) and in all (503), both
// with Retry-After; joining a running fill is never refused; the mirror's
// own pulls are spared the per-address cap; a fill counts until it ends,
// not until its client leaves.
func TestFillCaps(t *testing.T) {
	up := testupstream.Start(t)
	ds, gates := gatedBlobs(t, up, 9, 64<<10)
	m := startMirror(t, up, func(c *mirrorSetup) {
		c.MaxFills, c.MaxFillsPerClient, c.InternalToken = 4, 2, "tok"
	})
	t.Cleanup(up.ClearFaults) // before the mirror stops: held clients end
	get := func(from string, i int, hdr ...string) *blobConn {
		c := getBlobFrom(t, m, from, fmt.Sprintf("library/img%d", i), ds[i], hdr...)
		c.Close() // hang up at once: the fill runs on
		return c
	}
	internal := []string{"Authorization", "Bearer tok"}
	wantOK(t, get("127.0.0.1", 0))
	wantOK(t, get("127.0.0.1", 1))
	wantRefusal(t, get("127.0.0.1", 2), http.StatusTooManyRequests, "TOOMANYREQUESTS")
	wantOK(t, get("127.0.0.1", 0)) // joins
	wantOK(t, get("127.0.0.1", 2, internal...))
	wantOK(t, get("127.0.0.1", 3, internal...))
	wantRefusal(t, get("127.0.0.2", 4), http.StatusServiceUnavailable, "UNAVAILABLE")
	wantRefusal(t, get("127.0.0.1", 4, internal...), http.StatusServiceUnavailable, "UNAVAILABLE")
	m.Server.fills.mu.Lock()
	running := len(m.Server.fills.fills)
	m.Server.fills.mu.Unlock()
	if running != 4 {
		t.Fatalf("%d fills running, want 4 (their clients left)", running)
	}
	gates[0].Open()
	eventually(t, "the ended fill to leave both counts", func() bool {
		c := get("127.0.0.1", 4)
		return c.resp.StatusCode == http.StatusOK
	})
	wantRefusal(t, get("127.0.0.1", 5, internal...), http.StatusServiceUnavailable, "UNAVAILABLE")
	for _, g := range gates[:6] {
		g.Open()
	}
	for _, d := range ds[:5] {
		eventually(t, "the fills to commit", func() bool { return cached(t, m, d) })
	}
	eventually(t, "the fills to end", func() bool {
		c := &m.Server.fills.caps
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.running == 0
	})
	// Every count went back, exactly: this address may start two fills
	// again, not three.
	wantOK(t, get("127.0.0.1", 6))
	wantOK(t, get("127.0.0.1", 7))
	wantRefusal(t, get("127.0.0.1", 8), http.StatusTooManyRequests, "TOOMANYREQUESTS")
}
