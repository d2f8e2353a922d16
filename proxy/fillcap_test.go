package proxy

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testupstream"
)

// TestFillCaps: fills run on after their clients hang up, so those that
// no client reads any more are capped: per client address (429) and in
// all (503), both with Retry-After. Fills that clients read are never
// refused (one address may be a whole NAT'd CI farm pulling many layers),
// joining a running fill never is, the mirror's own pulls are spared the
// per-address cap, and a fill stops counting when it ends.
func TestFillCaps(t *testing.T) {
	const size = 8 << 20
	up := testupstream.Start(t)
	ds := make([]digest.Digest, 8)
	gates := make([]*testupstream.Gate, len(ds))
	for i := range ds {
		_, d := up.PushLargeBlobImage(t, fmt.Sprintf("library/img%d", i), "latest", size+int64(i))
		ds[i] = d
		// All but a MiB, then held: more than the socket buffers take,
		// so a client that hung up is found gone as the mirror writes.
		gates[i] = up.Gate(d).SetHeadBytes(size - 1<<20)
	}
	m := startMirror(t, up, func(c *mirrorSetup) {
		c.MaxFills, c.MaxFillsPerClient, c.InternalToken = 3, 2, "tok"
	})
	t.Cleanup(up.ClearFaults) // before the mirror stops: held clients end
	get := func(from string, i int, hdr ...string) *blobConn {
		return getBlobFrom(t, m, from, fmt.Sprintf("library/img%d", i), ds[i], hdr...)
	}
	internal := []string{"Authorization", "Bearer tok"}

	// Four clients of one address read four fills: over both caps, and
	// none refused.
	var reading []*blobConn
	for i := range 4 {
		c := get("127.0.0.1", i)
		wantOK(t, c)
		reading = append(reading, c)
	}
	for _, c := range reading {
		c.Close()
	}
	eventually(t, "the hung-up clients to be found gone", func() bool {
		all, mine := m.Server.fills.abandoned("127.0.0.1")
		return all == 4 && mine == 4
	})
	wantRefusal(t, get("127.0.0.2", 4), http.StatusServiceUnavailable, "UNAVAILABLE")
	wantRefusal(t, get("127.0.0.1", 4, internal...), http.StatusServiceUnavailable, "UNAVAILABLE")
	joined := get("127.0.0.2", 3) // joins: never refused
	wantOK(t, joined)

	gates[0].Open()
	eventually(t, "an abandoned fill to end", func() bool {
		all, _ := m.Server.fills.abandoned("127.0.0.1")
		return all == 2 // blobs 1 and 2; blob 3's has a reader again
	})
	wantRefusal(t, get("127.0.0.1", 5), http.StatusTooManyRequests, "TOOMANYREQUESTS") // its two abandoned
	wantOK(t, get("127.0.0.2", 5))
	wantOK(t, get("127.0.0.1", 6, internal...)) // spared the per-address cap
}
