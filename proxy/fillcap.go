package proxy

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Caps on the fills in progress. A fill runs on after its clients leave
// (up to FillTimeout), holding a temp file, an upstream connection, a
// goroutine and an eviction hold; without caps, one client asking for
// thousands of uncached blobs and hanging up would leave as many running
// and take every descriptor. Like the pass-through budget (passbudget.go),
// a request that would go over a cap is refused with Retry-After.

// Defaults of Options.MaxFills and MaxFillsPerClient.
const (
	DefaultMaxFills          = 256
	DefaultMaxFillsPerClient = 32
)

// Refusals of the caps (see toWire).
var (
	errTooManyFills          = errors.New("too many blob downloads in progress on this mirror")
	errTooManyFillsPerClient = errors.New("too many blob downloads started from this address are still in progress")
)

// fillStarter is who asks for a fill: the client's address, and whether it
// is the mirror itself (internal token) or a verified peer, which carry
// many clients' pulls and are spared the per-address cap.
type fillStarter struct {
	addr   string
	exempt bool
}

func (s *Server) fillStarterOf(ctx *fasthttp.RequestCtx, ex *exchange) fillStarter {
	exempt := ex.user == peerUser || ex.user == internalUser || s.internalClient(ctx)
	return fillStarter{addr: clientIP(ctx), exempt: exempt}
}

// fillCaps counts the fills in progress, in all and by the address that
// started each, from their start until they end.
type fillCaps struct {
	mu       sync.Mutex
	running  int64
	byClient map[string]int64
	warned   time.Time // the last refusal warning: one a minute
}

// admitFill counts in a fill who is about to start, or refuses it over a
// cap. done uncounts it, once; call it when the fill ends.
func (s *Server) admitFill(who fillStarter) (done func(), err error) {
	c := &s.fills.caps
	total := capOf(int64(s.opts.MaxFills), DefaultMaxFills)
	perClient := capOf(int64(s.opts.MaxFillsPerClient), DefaultMaxFillsPerClient)
	counted := !who.exempt && perClient > 0
	c.mu.Lock()
	switch {
	case total > 0 && c.running >= total:
		err = fmt.Errorf("%w (%d)", errTooManyFills, total)
	case counted && c.byClient[who.addr] >= perClient:
		err = fmt.Errorf("%w (%d)", errTooManyFillsPerClient, perClient)
	}
	if err != nil {
		warn := s.opts.Now().Sub(c.warned) > time.Minute
		if warn {
			c.warned = s.opts.Now()
		}
		c.mu.Unlock()
		if warn {
			s.log.Warn("refusing to start a fill over a cap (logged once a minute)", "err", err, "client", who.addr, "max_fills", total, "max_fills_per_client", perClient)
		}
		return nil, err
	}
	c.running++
	if counted {
		if c.byClient == nil {
			c.byClient = make(map[string]int64)
		}
		c.byClient[who.addr]++
	}
	c.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { c.release(who.addr, counted) }) }, nil
}

func (c *fillCaps) release(addr string, counted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running--
	if counted {
		if c.byClient[addr]--; c.byClient[addr] <= 0 {
			delete(c.byClient, addr)
		}
	}
}
