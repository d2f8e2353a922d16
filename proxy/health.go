package proxy

import (
	"errors"
	"sync"
	"time"

	"github.com/regmirror/regmirror/upstream"
)

// upstreamHealth remembers, per registry, that upstream just failed to
// answer (down, 5xx, timed out, rate limited). While it is marked out,
// tags that the cache can answer are served stale at once instead of
// waiting out another revalidation that will fail: when the internet or
// Docker Hub's rate limit goes away, cached content stays fast. Misses
// still ask upstream, having nothing else to serve.
type upstreamHealth struct {
	mu       sync.Mutex
	outUntil map[string]time.Time
	why      map[string]string // outageReason of the last failure
}

// maxOutage caps how long a Retry-After keeps a registry marked out.
const maxOutage = time.Hour

// out reports whether registry is marked out at now.
func (h *upstreamHealth) out(registry string, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return now.Before(h.outUntil[registry])
}

// failed marks registry out after err: for backoff, or for the upstream's
// Retry-After when it rate limited us.
func (h *upstreamHealth) failed(registry string, err error, now time.Time, backoff time.Duration) time.Time {
	var rl *upstream.RateLimitError
	if errors.As(err, &rl) && rl.RetryAfter > backoff {
		backoff = min(rl.RetryAfter, maxOutage)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.outUntil == nil {
		h.outUntil = map[string]time.Time{}
		h.why = map[string]string{}
	}
	h.why[registry] = outageReason(err)
	until := now.Add(backoff)
	if until.After(h.outUntil[registry]) {
		h.outUntil[registry] = until
	}
	return h.outUntil[registry]
}

// answered clears registry's mark: upstream answered.
func (h *upstreamHealth) answered(registry string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.outUntil, registry)
}

// state returns until when registry is marked out and why (zero when it
// is not).
func (h *upstreamHealth) state(registry string, now time.Time) (time.Time, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if until := h.outUntil[registry]; now.Before(until) {
		return until, h.why[registry]
	}
	return time.Time{}, ""
}
