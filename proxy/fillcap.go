package proxy

import (
	"errors"
	"fmt"

	"github.com/valyala/fasthttp"
)

// Caps on the fills that run on with no client reading them. A fill runs
// on after its clients leave (up to FillTimeout), holding a temp file, an
// upstream connection, a goroutine and an eviction hold; without a cap,
// one client asking for thousands of uncached blobs and hanging up would
// leave as many running and take every descriptor. Fills that clients
// still read are bounded by the connection caps instead, so a busy NAT or
// CI farm behind one address is never refused for pulling many layers at
// once. Like the pass-through budget (passbudget.go), a request that would
// start a fill over a cap is refused with Retry-After.

// Defaults of Options.MaxFills and MaxFillsPerClient.
const (
	DefaultMaxFills          = 256
	DefaultMaxFillsPerClient = 32
)

// Refusals of the caps (see toWire).
var (
	errTooManyFills          = errors.New("too many blob downloads nobody reads are in progress on this mirror")
	errTooManyFillsPerClient = errors.New("too many blob downloads started from this address are in progress after their clients left")
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

// admitFill refuses who a new fill when the fills running that no client
// reads (abandoned) reach a cap: in all, or those who's address started.
func (s *Server) admitFill(who fillStarter) error {
	total := capOf(int64(s.opts.MaxFills), DefaultMaxFills)
	perClient := capOf(int64(s.opts.MaxFillsPerClient), DefaultMaxFillsPerClient)
	all, mine := s.fills.abandoned(who.addr)
	var err error
	switch {
	case total > 0 && all >= total:
		err = fmt.Errorf("%w (%d)", errTooManyFills, total)
	case !who.exempt && perClient > 0 && mine >= perClient:
		err = fmt.Errorf("%w (%d)", errTooManyFillsPerClient, perClient)
	default:
		return nil
	}
	if s.fills.refusals.due(s.opts.Now()) {
		s.log.Warn("refusing to start a fill over a cap (logged once a minute)", "err", err, "client", who.addr, "max_fills", total, "max_fills_per_client", perClient)
	}
	return err
}

// abandoned counts the fills in progress that no client reads: in all, and
// those a client at addr started (the mirror's own and peers' not).
// Linear in the fills running; asked only when one is about to start.
func (g *fillGroup) abandoned(addr string) (all, byAddr int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, f := range g.fills {
		if f.attached.Load() > 0 {
			continue
		}
		all++
		if !f.starter.exempt && f.starter.addr == addr {
			byAddr++
		}
	}
	return all, byAddr
}

// follow records that ex's client reads f (until ex is done): a fill with
// a reader is not abandoned. A client that moves to another fill (a retry)
// leaves the first.
func (ex *exchange) follow(f *fill) {
	ex.unfollow()
	f.attached.Add(1)
	ex.fill = f
}

func (ex *exchange) unfollow() {
	if f := ex.fill; f != nil {
		ex.fill = nil
		f.attached.Add(-1)
	}
}
