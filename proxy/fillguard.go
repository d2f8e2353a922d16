package proxy

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/upstream"
)

// What a fill checks of an upstream before and while it trusts a body: the
// size it announces (against the digest), whether the blob can be cached at
// all, and that the body keeps coming at a useful rate.

// emptyDigest names the one blob whose size is 0.
var emptyDigest = digest.FromBytes(nil)

var (
	// errUpstreamLength: upstream announced (or sent) a size that cannot be
	// the digest's. It is an upstream error (502), never resumed.
	errUpstreamLength = fmt.Errorf("%w: the size upstream announced contradicts the digest (%w)", errUpstreamCorrupt, cache.ErrSizeMismatch)
	// errDescriptorLength: upstream announced another size than a manifest
	// of the asking repository gave the digest's descriptor. Which of the
	// two lies is not known, and it says nothing about the digest in other
	// repositories: their clients who joined such a fill get one of their
	// own (blobDownload).
	errDescriptorLength = fmt.Errorf("%w, or a manifest of this repository does", errUpstreamLength)
	// errUpstreamTooSlow: an upstream body fell below the minimum rate; the
	// fill resumes it with a Range request, a few times, then gives up.
	errUpstreamTooSlow = fmt.Errorf("%w: upstream is sending too slowly", upstream.ErrUnavailable)
	// errCannotFit: the blob is larger than the cache could ever make room
	// for; it is streamed to its clients without caching.
	errCannotFit = errors.New("the blob cannot fit in the cache")
)

// checkAnnouncedSize refuses a size that contradicts digest d: 0 bytes for
// any blob but the empty one, anything but 0 for the empty one, or another
// size than a manifest of rq's repository served to clients gave d's
// descriptor. A size of -1 (not announced) is checked at the end, by the
// digest.
func (s *Server) checkAnnouncedSize(rq request, d digest.Digest, size int64) error {
	switch {
	case size < 0:
		return nil
	case d == emptyDigest && size != 0, d != emptyDigest && size == 0:
		return fmt.Errorf("%w: %d bytes announced for %s", errUpstreamLength, size, d)
	}
	if known, ok := s.sizes.get(rq.registry, rq.repo, d); ok && known != size {
		return fmt.Errorf("%w: %d bytes announced for %s, its descriptor says %d", errDescriptorLength, size, d, known)
	}
	return nil
}

// expectedSize is the size a download of d must have: what upstream
// announced, or, when it announced none, what a descriptor said.
func (s *Server) expectedSize(rq request, d digest.Digest, announced int64) int64 {
	if announced >= 0 {
		return announced
	}
	if known, ok := s.sizes.get(rq.registry, rq.repo, d); ok {
		return known
	}
	return -1
}

// roomChecker is the optional side of FillHooks that says, before a fill
// writes a byte, whether a blob of size bytes could be cached at all
// (within the budget and on the filesystem, with everything evictable
// gone). A blob that cannot is passed through and evicts nothing.
type roomChecker interface {
	CanFit(size int64) error
}

// canCache asks the hooks whether size bytes can be cached; unknown sizes
// and hooks that cannot tell say yes.
func (s *Server) canCache(size int64) error {
	rc, ok := s.opts.Hooks.(roomChecker)
	if !ok || size < 0 {
		return nil
	}
	return rc.CanFit(size)
}

// Defaults of the minimum-throughput guard.
const (
	DefaultMinUpstreamRate       = 10 << 10 // bytes per second
	DefaultMinUpstreamRateWindow = time.Minute
)

// guardRate wraps an upstream body in the minimum-throughput guard, unless
// it is off.
func (s *Server) guardRate(r io.Reader) io.Reader {
	if s.opts.MinUpstreamRate < 0 {
		return r
	}
	return &rateGuard{r: r, now: s.opts.Now, min: s.opts.MinUpstreamRate, window: s.opts.MinUpstreamRateWindow}
}

// rateGuard fails a body whose average rate over a window of time spent
// waiting on it is below min bytes per second. Only time inside Read counts:
// a fill held back by its own disk or by slow clients is not upstream's
// fault. The check runs when a Read returns; a Read that never returns is
// the upstream client's stall timeout's business.
type rateGuard struct {
	r      io.Reader
	now    func() time.Time
	min    int64 // bytes per second
	window time.Duration
	busy   time.Duration // time inside Read in this window
	n      int64         // bytes read in this window
}

func (g *rateGuard) Read(p []byte) (int, error) {
	t0 := g.now()
	n, err := g.r.Read(p)
	g.busy += g.now().Sub(t0)
	g.n += int64(n)
	if err != nil || g.busy < g.window {
		return n, err
	}
	rate := float64(g.n) / g.busy.Seconds()
	if rate < float64(g.min) {
		return n, fmt.Errorf("%w: %.0f bytes/s over %v, minimum %d", errUpstreamTooSlow, rate, g.busy.Round(time.Millisecond), g.min)
	}
	g.busy, g.n = 0, 0
	return n, nil
}
