package testupstream

import (
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// faults is the current set of fault switches; handlers take a snapshot.
type faults struct {
	latency    time.Duration
	down       bool
	status     int
	retryAfter string
	// getStatus, when set, answers manifest GETs only (HEADs still work):
	// a registry whose pull budget is spent, or whose GET path fails.
	getStatus int
	cutAfter  int64 // -1: off
	corrupt   bool

	// Body faults (LieBlobLength, TrickleBlobs); zero is off.
	lying        bool
	lieLength    int64
	trickleChunk int
	trickleEvery time.Duration
	trickleLeft  int
}

func (s *Server) snapshotFaults() faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// SetLatency delays every registry response by d (0 clears).
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.latency = d
}

// SetDown makes the registry drop every request: the connection is hijacked
// and closed without a response. The token server stays up.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.down = down
}

// SetStatus makes every authorized registry request answer code with a
// registry JSON error body (UNAVAILABLE for 503, TOOMANYREQUESTS for 429,
// DENIED for 403, ...) and, if retryAfter is not empty, a Retry-After header.
// Code 0 clears it.
func (s *Server) SetStatus(code int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.status = code
	s.faults.retryAfter = retryAfter
}

// SetManifestGETStatus makes every authorized manifest GET answer code, as
// SetStatus does, while manifest HEADs and everything else still work (as
// Docker Hub answers a HEAD, which costs no pull, once the pull budget is
// spent). Code 0 clears it.
func (s *Server) SetManifestGETStatus(code int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.getStatus = code
	s.faults.retryAfter = retryAfter
}

// CutBlobsAfter makes blob GETs close the connection after n body bytes (of
// that response, whatever its Range); -1 clears it.
func (s *Server) CutBlobsAfter(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.cutAfter = n
}

// CorruptBlobs makes blob GETs flip the last byte of the blob (the length is
// unchanged), in every response whose range includes that byte.
func (s *Server) CorruptBlobs(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.corrupt = on
}

// ClearFaults turns every fault switch off and opens every gate.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	s.faults = faults{cutAfter: -1}
	gates := s.gates
	s.gates = map[digest.Digest]*Gate{}
	s.mu.Unlock()
	for _, g := range gates {
		g.Open()
	}
}

// Gate installs a closed gate for blob d, replacing (and opening) any earlier
// one. A blob GET for d that meets a closed gate sends its headers and the
// first SetHeadBytes bytes of its body, then blocks until Open (or until the
// client leaves or the server closes).
func (s *Server) Gate(d digest.Digest) *Gate {
	g := &Gate{opened: make(chan struct{}), arrived: make(chan struct{})}
	s.mu.Lock()
	old := s.gates[d]
	s.gates[d] = g
	s.mu.Unlock()
	if old != nil {
		old.Open()
	}
	return g
}

func (s *Server) gate(d digest.Digest) *Gate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gates[d]
}

// Gate holds blob GETs for one digest until opened; see Server.Gate.
type Gate struct {
	mu         sync.Mutex
	head       int64
	headers    bool // hold before the headers
	requests   int
	openOnce   sync.Once
	opened     chan struct{}
	arriveOnce sync.Once
	arrived    chan struct{}
}

// SetHeadBytes sets how many body bytes a held request sends before it
// blocks (default 0). It returns g for chaining.
func (g *Gate) SetHeadBytes(n int64) *Gate {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.head = n
	return g
}

// HoldHeaders makes a held request wait before it sends its status and
// headers, as an upstream slow to answer does. It returns g for chaining.
func (g *Gate) HoldHeaders() *Gate {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.headers = true
	return g
}

func (g *Gate) holdsHeaders() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.headers
}

// Open releases every held request and lets later ones pass. Idempotent.
func (g *Gate) Open() { g.openOnce.Do(func() { close(g.opened) }) }

// Arrived is closed when the first request for the gate's blob arrives.
func (g *Gate) Arrived() <-chan struct{} { return g.arrived }

// Requests is the number of blob GETs that have met this gate.
func (g *Gate) Requests() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.requests
}

func (g *Gate) isOpen() bool {
	select {
	case <-g.opened:
		return true
	default:
		return false
	}
}

// arrive records a request and returns the head byte count in force.
func (g *Gate) arrive() int64 {
	g.mu.Lock()
	g.requests++
	head := g.head
	g.mu.Unlock()
	g.arriveOnce.Do(func() { close(g.arrived) })
	return head
}

// Body faults for the fill and pass-through tests (lying lengths, trickling
// bodies). Zero values are off, so ClearFaults clears them too.

// LieBlobLength makes full (non-Range) blob GETs announce Content-Length n
// whatever the blob's real size: the response carries the first min(n, size)
// bytes of the blob, and when n is larger than the blob the connection is
// closed after the real bytes, as a server that lies about its content would.
// n < 0 clears it.
func (s *Server) LieBlobLength(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.lying, s.faults.lieLength = n >= 0, n
}

// TrickleBlobs makes the next responses blob GETs (every one when responses
// <= 0) send their body chunk bytes at a time, one chunk every interval, as
// a slow or hostile upstream would. TrickleBlobs(0, 0, 0) clears it.
func (s *Server) TrickleBlobs(chunk int, every time.Duration, responses int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.trickleChunk, s.faults.trickleEvery = chunk, every
	s.faults.trickleLeft = responses
}

// takeTrickle decides whether this blob GET trickles, consuming one of the
// counted responses; it returns chunk 0 when it does not.
func (s *Server) takeTrickle() (chunk int, every time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &s.faults
	chunk, every = f.trickleChunk, f.trickleEvery
	if chunk <= 0 {
		return 0, 0
	}
	if f.trickleLeft > 0 {
		if f.trickleLeft--; f.trickleLeft == 0 {
			f.trickleChunk = 0 // that was the last counted response
		}
	}
	return chunk, every
}
