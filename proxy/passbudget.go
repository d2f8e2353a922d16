package proxy

import (
	"errors"
	"fmt"
	"time"
)

// The memory of pass-throughs (passthrough.go): each holds a window of
// the blob while clients read it, so what they take together is bounded
// in bytes (a small blob's window is its size). A pass-through over the
// budget is refused with Retry-After (clients retry), never queued: a
// queue would hold the very connections and memory the budget protects.

// DefaultPassThroughMemory is Options.PassThroughMemory's default: 31
// whole windows, or many more of small blobs.
const DefaultPassThroughMemory = 256 << 20

// passShareOverhead is what a share costs besides its window: the buffer
// its download copies through. Counting it keeps shares of tiny blobs
// from being many times what their windows say.
const passShareOverhead = fillBufferSize

// capRetryAfter is what a client refused by a cap or budget is told to
// wait: downloads of layers end within seconds to minutes, and a retry
// costs one request.
const capRetryAfter = 5 * time.Second

// capOf resolves a configured cap: 0 takes def, a negative value means no
// cap (returned as 0).
func capOf(configured, def int64) int64 {
	switch {
	case configured == 0:
		return def
	case configured < 0:
		return 0
	}
	return configured
}

// errPassThroughMemory refuses a pass-through over the budget (see toWire).
var errPassThroughMemory = errors.New("too many blobs are being streamed without caching")

// passBudget is the bytes the windows of all pass-throughs may take (0:
// no bound).
func (s *Server) passBudget() int64 {
	return capOf(s.opts.PassThroughMemory, DefaultPassThroughMemory)
}

// passWindowFor is the window a pass-through of a blob of size bytes
// (-1: not known) needs when its bytes from base on come from upstream:
// never more than those bytes, so a small blob costs its size, not a
// whole window.
func passWindowFor(window, size, base int64) int64 {
	if size < 0 {
		return window
	}
	return max(min(window, size-base), 1)
}

// admitPassLocked reserves need bytes of the pass-through budget for a new
// share (its window and passShareOverhead), or refuses it. One share is always admitted when none runs, so a
// budget smaller than a window still lets blobs through one at a time.
// Call with the group's lock held.
func (s *Server) admitPassLocked(need int64) error {
	g := &s.passes
	budget := s.passBudget()
	if budget > 0 && g.used > 0 && g.used+need > budget {
		if g.refusals.due(s.opts.Now()) {
			s.log.Warn("refusing a pass-through over the memory budget (logged once a minute)", "budget", budget, "in_use", g.used)
		}
		return fmt.Errorf("%w: %d of %d bytes of windows in use", errPassThroughMemory, g.used, budget)
	}
	g.used += need
	return nil
}

// refusedPass is a client of no download: its share failed with err at
// once, so the caller answers err as it would any failed start.
func (s *Server) refusedPass(rq request, reason string, err error) *passReader {
	p := &passShare{
		s: s, digest: rq.ref.digest, rq: rq, reason: reason,
		started: make(chan struct{}), size: -1,
		readers: make(map[*passReader]struct{}),
		done:    true, err: err, gone: true, released: true,
	}
	p.data.L, p.room.L = &p.mu, &p.mu
	p.startMu.Do(func() { close(p.started) })
	r := &passReader{p: p, end: -1}
	p.readers[r] = struct{}{}
	return r
}
