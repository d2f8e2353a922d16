package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/upstream"
)

// A pass-through serves a blob that is not cached: the disk is full and
// eviction cannot make room, or the blob is larger than the cache could
// ever hold. It is still one upstream download per digest, shared by every
// client that waits for it (a passShare), verified like a fill: every byte
// from offset 0 is hashed, and the newest byte is held back from every
// client until the digest is known, so no client completes a wrong body.
//
// The shared bytes live in a bounded in-memory window (a ring of
// defaultPassWindow bytes), not in a temp file: a pass-through exists
// because the cache's disk is full or too small, so a temp file would need
// the very space that is missing (or another filesystem nobody sized).
// Memory is one window per digest being passed through, whatever the
// number of clients, and no larger than the blob when its size is known;
// all windows together stay within Options.PassThroughMemory (a new
// pass-through over it is refused, see passbudget.go). A window counts until
// its download has ended and its last client has left, since clients
// read what is left of it after the end. The download waits for the
// slowest client to free room in the window, but for at most
// defaultPassLagWait at a time; a client that has not made room by then is
// cut (its connection ends short; it retries), so a stalled client can hold
// the others back only briefly and never makes memory grow.
//
// A client's disconnect detaches only that client. The download stops when
// no client is left, since nobody waits for it then.

const (
	defaultPassWindow  = 8 << 20
	defaultPassLagWait = 10 * time.Second
)

// Why a blob is passed through, as the metric and the log say it.
const (
	reasonDiskFull  = "disk_full"
	reasonCannotFit = "cannot_fit"
)

// errFellBehind cuts a client that could not keep up with the shared
// download's window.
var errFellBehind = errors.New("client fell behind the shared upstream download")

// errNoClients stops a shared download nobody waits for any more.
var errNoClients = errors.New("every client of the pass-through left")

// passGroup tracks the shared pass-throughs, at most one joinable per digest.
type passGroup struct {
	mu     sync.Mutex
	shares map[digest.Digest]*passShare

	// window and lagWait size new shares; zero means the defaults (tests
	// set them small).
	window  int64
	lagWait time.Duration

	// used is the bytes the shares not yet released hold, their windows
	// and overhead (admitPassLocked).
	used     int64
	refusals oncePerMinute // the warning about pass-throughs refused over it
}

// joinable is the pass-through of d that new clients may join, or nil.
func (g *passGroup) joinable(d digest.Digest) *passShare {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.shares[d]
}

// passShare is one upstream download of one uncached digest, shared by
// every client attached to it.
type passShare struct {
	s       *Server
	digest  digest.Digest
	rq      request
	reason  string
	window  int64
	lagWait time.Duration
	cancel  context.CancelFunc
	started chan struct{} // closed when size is known or the download failed
	startMu sync.Once

	mu       sync.Mutex
	data     sync.Cond // clients wait here for bytes
	room     sync.Cond // the download waits here for clients to free room
	roomWait bool      // the download is waiting on room
	size     int64     // total size; -1 when upstream did not say
	base     int64     // offset of the first byte fetched from upstream; bytes before it come from the creator's prefix
	head     int64     // offset of the next byte to arrive
	ring     []byte
	readers  map[*passReader]struct{}
	// reserved counts clients of a handed-off fill that will attach at
	// base: until they have, the window keeps base (see handOff).
	reserved int
	done     bool  // the download ended
	err      error // why it failed; nil after done means verified
	gone     bool  // left the group: takes no new clients
	// released: the window went back to the group's budget (the download
	// ended and no client is left or expected); guarded by the group's
	// lock and mu both.
	released bool
}

// tailLocked is the oldest offset still in the window.
func (p *passShare) tailLocked() int64 {
	return max(p.base, p.head-p.window)
}

// pos is the offset from which r still needs the window.
func (p *passShare) pos(r *passReader) int64 { return max(r.off, p.base) }

// attachLocked adds a client that reads from off (the blob's start when
// not known yet); nil when this share cannot serve it: it has failed, or
// left its group (unless it completed and still holds off in its window:
// a handed-off blob smaller than the window may be whole before its first
// client arrives), or its window has moved past off and the client has no
// local prefix to bridge the gap, or its window went back to the budget.
// Call with the group's lock and p.mu held.
func (p *passShare) attachLocked(prefix io.ReaderAt, prefixEnd, off, end int64, reserved bool) *passReader {
	if reserved && p.reserved > 0 {
		p.reserved--
	}
	if p.released || (p.gone || p.done) && !(p.done && p.err == nil) ||
		off < p.tailLocked() && (off >= p.base || prefix == nil || prefixEnd < p.base || p.tailLocked() != p.base) {
		p.releaseLocked() // this may have been the last client expected
		return nil
	}
	r := &passReader{p: p, prefix: prefix, off: off, end: end}
	p.readers[r] = struct{}{}
	return r
}

// joinPass attaches a client to the shared pass-through of rq's digest,
// starting one if none can take it. prefix, when not nil, holds the blob's
// bytes [0, prefixEnd) locally (a failed fill's temp file), which a new
// share hashes instead of fetching them again. The caller waits for
// r.p.startResult and closes r.
func (s *Server) joinPass(rq request, reason string, prefix io.ReaderAt, prefixEnd, off, end int64) *passReader {
	return s.joinPassVia(nil, false, rq, reason, prefix, prefixEnd, off, end)
}

// joinPassVia is joinPass trying share first: the one a fill handed its
// body to, holding a place for this client when reserved.
//
// Another repository's download of the digest is joined only when rq's
// repository may have the digest without asking upstream (linked: always
// without private registries); otherwise rq gets a download of its own,
// which upstream answers for rq's repository.
func (s *Server) joinPassVia(share *passShare, reserved bool, rq request, reason string, prefix io.ReaderAt, prefixEnd, off, end int64) *passReader {
	g := &s.passes
	d := rq.ref.digest
	anyRepo := s.linked(rq, d)
	size, ok := s.sizes.get(rq.registry, rq.repo, d)
	if !ok {
		size = -1
	}
	g.mu.Lock()
	for _, p := range []*passShare{share, g.shares[d]} {
		if p == nil || p != share && !anyRepo && !p.rq.sameRepo(rq) {
			continue
		}
		p.mu.Lock()
		r := p.attachLocked(prefix, prefixEnd, off, end, reserved && p == share)
		p.mu.Unlock()
		if r != nil {
			g.mu.Unlock()
			return r
		}
	}
	base := int64(0)
	if prefix != nil {
		base = prefixEnd
	}
	p, err := s.newPassShareLocked(rq, reason, base, size)
	if err != nil {
		g.mu.Unlock()
		return s.refusedPass(rq, reason, err)
	}
	r := p.attachLocked(prefix, prefixEnd, off, end, false)
	g.mu.Unlock()
	// The local prefix is hashed here, by its owner (its descriptor is
	// closed when that client's response ends), before the download starts;
	// clients that join meanwhile wait for the start like any other.
	h := sha256.New()
	if base > 0 {
		if _, err := io.Copy(h, io.NewSectionReader(prefix, 0, base)); err != nil {
			p.finish(fmt.Errorf("hashing the local prefix: %w", err))
			return r
		}
	}
	ctx, cancel := context.WithTimeout(s.fillCtx, s.opts.FillTimeout)
	s.startPass(ctx, cancel, p, nil, h)
	return r
}

// handOff turns a fill's open upstream body (from offset 0) into a shared
// pass-through, so that a blob found too large to cache costs no second
// upstream request. The clients already waiting for the fill have a place
// kept at offset 0 (the window does not move on without them, within the
// lag allowance), so that none of them misses the start and costs a second
// download; they join through joinPassVia. Over the memory budget it
// refuses (the caller closes the body and fails the fill with the error).
func (s *Server) handOff(ctx context.Context, cancel context.CancelFunc, f *fill, rq request, blob *upstream.Blob, reason string) error {
	s.passes.mu.Lock()
	p, err := s.newPassShareLocked(rq, reason, 0, blob.Size)
	if err != nil {
		s.passes.mu.Unlock()
		return err
	}
	f.mu.Lock()
	// At least the client that started the fill comes, even if it has not
	// reached serveFill yet.
	f.pass, f.passReserved = p, max(f.waiting, 1)
	p.reserved = f.passReserved
	f.mu.Unlock()
	s.passes.mu.Unlock()
	s.startPass(ctx, cancel, p, blob, sha256.New())
	return nil
}

// newPassShareLocked creates a share for a blob of size bytes (-1: not
// known yet), its window reserved from the budget, and makes it the
// joinable one for its digest (one still running keeps serving the clients
// it has). Call with the group's lock held.
func (s *Server) newPassShareLocked(rq request, reason string, base, size int64) (*passShare, error) {
	g := &s.passes
	if g.shares == nil {
		g.shares = make(map[digest.Digest]*passShare)
	}
	window, lagWait := g.window, g.lagWait
	if window <= 0 {
		window = defaultPassWindow
	}
	if lagWait <= 0 {
		lagWait = defaultPassLagWait
	}
	window = passWindowFor(window, size, base)
	if err := s.admitPassLocked(window + passShareOverhead); err != nil {
		return nil, err
	}
	p := &passShare{
		s: s, digest: rq.ref.digest, rq: rq, reason: reason,
		window: window, lagWait: lagWait,
		started: make(chan struct{}),
		size:    -1, base: base, head: base,
		readers: make(map[*passReader]struct{}),
	}
	p.data.L, p.room.L = &p.mu, &p.mu
	if old := g.shares[p.digest]; old != nil {
		old.mu.Lock()
		old.gone = true
		old.mu.Unlock()
	}
	g.shares[p.digest] = p
	return p, nil
}

// startPass runs p's download in its own goroutine, detached from every
// client. blob, when not nil, is an upstream body already open at offset 0,
// read under ctx (the handing fill's, whose cancel p now owns). ctx bounds
// the download; cancel is how the last client leaving stops it.
func (s *Server) startPass(ctx context.Context, cancel context.CancelFunc, p *passShare, blob *upstream.Blob, h hash.Hash) {
	p.mu.Lock()
	p.cancel = cancel
	p.mu.Unlock()
	if !s.fillsAlive.start() {
		if blob != nil {
			blob.Body.Close()
		}
		cancel()
		p.finish(errStopping)
		return
	}
	s.metrics.passThrough(p.reason, p.rq.registry)
	go func() {
		defer s.fillsAlive.done()
		defer cancel()
		start := time.Now()
		err := p.run(ctx, blob, h)
		p.finish(err)
		if errors.Is(err, errNoClients) || (err != nil && ctx.Err() != nil && p.abandoned()) {
			s.log.Info("pass-through stopped: every client left", "digest", p.digest, "bytes", p.head)
			return
		}
		if err != nil {
			s.log.Warn("pass-through failed", "digest", p.digest, "reason", p.reason, "bytes", p.head, "duration_s", time.Since(start).Round(time.Millisecond).Seconds(), "err", err)
			return
		}
		s.log.Info("pass-through done (not cached)", "digest", p.digest, "reason", p.reason, "bytes", p.head, "duration_s", time.Since(start).Round(time.Millisecond).Seconds())
	}()
}

// abandoned tells whether the download was stopped because its last client
// left.
func (p *passShare) abandoned() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.readers) == 0
}

// startResult waits until the size is known (or the download failed).
func (p *passShare) startResult() (int64, error) {
	<-p.started
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done && p.err != nil {
		return 0, p.err
	}
	return p.size, nil
}

// start publishes the size, and gives back to the budget the part of the
// window a blob smaller than it does not need (no byte is in it yet).
func (p *passShare) start(size int64) {
	g := &p.s.passes
	g.mu.Lock()
	p.mu.Lock()
	p.size = size
	if w := passWindowFor(p.window, size, p.base); w < p.window && p.ring == nil && !p.released {
		g.used -= p.window - w
		p.window = w
	}
	p.mu.Unlock()
	g.mu.Unlock()
	p.startMu.Do(func() { close(p.started) })
}

// releaseLocked gives p's window back to the budget once nothing can read
// it any more: the download ended and no client is attached or expected.
// Call with the group's lock and p.mu held.
func (p *passShare) releaseLocked() {
	if p.released || !p.done || len(p.readers) > 0 || p.reserved > 0 {
		return
	}
	p.released = true
	p.ring = nil
	p.s.passes.used -= p.window + passShareOverhead
}

// finish ends the download and takes the share out of its group.
func (p *passShare) finish(err error) {
	g := &p.s.passes
	g.mu.Lock()
	if g.shares[p.digest] == p {
		delete(g.shares, p.digest)
	}
	p.mu.Lock()
	p.done, p.err, p.gone = true, err, true
	p.releaseLocked()
	p.mu.Unlock()
	g.mu.Unlock()
	p.data.Broadcast()
	p.room.Broadcast()
	p.startMu.Do(func() { close(p.started) })
}

// run downloads the blob into the window, hashing it, resuming cut or too
// slow bodies with a Range request, and verifies size and digest at the end.
func (p *passShare) run(ctx context.Context, blob *upstream.Blob, h hash.Hash) error {
	s := p.s
	// Wake put's wait for room when the download is cancelled.
	stop := context.AfterFunc(ctx, p.room.Broadcast)
	defer stop()
	buf := make([]byte, fillBufferSize)
	var budget resumeBudget
	first := true
	var whole *upstream.Blob // the one body every byte came from, if one did
	for {
		if blob == nil {
			var err error
			blob, err = p.rq.up.GetBlob(ctx, p.rq.repo, p.digest, p.head)
			if err != nil {
				if !budget.failedGet(err, !first) {
					return err
				}
				continue
			}
		}
		whole = nil // only a body hashed from byte 0 (no prefix, no resume) names its source
		if p.head == 0 && blob.Offset == 0 {
			whole = blob
		}
		if err := p.accept(blob, first); err != nil {
			blob.Body.Close()
			return err
		}
		first = false
		progressed, err := p.copyBody(ctx, s.guardRate(blob.Body), buf, h)
		blob.Body.Close()
		blob = nil
		if err == nil {
			break
		}
		if ctx.Err() != nil || errors.Is(err, errUpstreamLength) {
			return err
		}
		if !budget.failedBody(err, progressed) {
			return err
		}
		s.log.Info("pass-through resuming", "digest", p.digest, "offset", p.head, "err", err)
	}
	if p.size >= 0 && p.head != p.size {
		return fmt.Errorf("%w: got %d bytes, upstream announced %d", errUpstreamLength, p.head, p.size)
	}
	if got := digest.NewDigest(digest.SHA256, h); got != p.digest {
		if whole != nil {
			whole.Refuted() // the source sent it all: it is told
		}
		return fmt.Errorf("%w: %s", cache.ErrDigestMismatch, got)
	}
	return nil
}

// accept checks one upstream response against what the share knows, skips
// what a server that ignored the Range re-sends, and publishes the size
// from the first response.
func (p *passShare) accept(blob *upstream.Blob, first bool) error {
	if err := p.s.checkAnnouncedSize(p.rq, p.digest, blob.Size); err != nil {
		return err
	}
	blob.Size = p.s.expectedSize(p.rq, p.digest, blob.Size)
	if first {
		p.start(blob.Size)
	} else if blob.Size >= 0 && p.size >= 0 && blob.Size != p.size {
		return fmt.Errorf("%w: %d bytes on resume, %d before", errUpstreamLength, blob.Size, p.size)
	}
	if blob.Offset > p.head {
		return fmt.Errorf("%w: asked for offset %d, upstream began at %d", upstream.ErrUnavailable, p.head, blob.Offset)
	}
	if _, err := io.CopyN(io.Discard, blob.Body, p.head-blob.Offset); err != nil {
		return fmt.Errorf("%w: skipping to offset %d: %v", upstream.ErrUnavailable, p.head, err)
	}
	return nil
}

// copyBody moves one upstream body into the window.
func (p *passShare) copyBody(ctx context.Context, body io.Reader, buf []byte, h hash.Hash) (progressed bool, err error) {
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if p.size >= 0 && p.head+int64(n) > p.size {
				return progressed, fmt.Errorf("%w: upstream sent more than the %d bytes it announced", errUpstreamLength, p.size)
			}
			h.Write(buf[:n])
			if err := p.put(ctx, buf[:n]); err != nil {
				return progressed, err
			}
			progressed = true
		}
		if rerr == io.EOF {
			return progressed, nil
		}
		if rerr != nil {
			return progressed, rerr
		}
	}
}

// put appends b to the window once every attached client is past the bytes
// it overwrites, waiting for slow clients at most lagWait and cutting those
// that still hold the window after it.
func (p *passShare) put(ctx context.Context, b []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	// expired is this put's own (set under p.mu by its timer): a flag on p
	// could be set by the timer of a put that already returned, and cut
	// the next put's slow clients with no wait at all.
	var timer *time.Timer
	expired := false
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if len(p.readers) == 0 && p.reserved == 0 {
			return errNoClients
		}
		need := p.head + int64(len(b)) - p.window // every client must be at or past this
		blocked := p.reserved > 0 && p.base < need
		if blocked && expired {
			p.reserved, blocked = 0, false // those clients are late: they will start afresh
		}
		for r := range p.readers {
			if p.pos(r) < need {
				if expired {
					r.cut = true
					delete(p.readers, r)
					p.s.log.Warn("pass-through: cutting a client that fell behind", "digest", p.digest, "offset", r.off, "head", p.head)
					continue
				}
				blocked = true
			}
		}
		if !blocked {
			break
		}
		if timer == nil {
			timer = time.AfterFunc(p.lagWait, func() {
				p.mu.Lock()
				expired = true
				p.mu.Unlock()
				p.room.Broadcast()
			})
		}
		p.roomWait = true
		p.room.Wait()
		p.roomWait = false
	}
	if p.ring == nil {
		p.ring = make([]byte, p.window)
	}
	for len(b) > 0 {
		i := p.head % p.window
		n := copy(p.ring[i:], b)
		b = b[n:]
		p.head += int64(n)
	}
	p.data.Broadcast()
	return nil
}

// releasableLocked is how far clients may read: all but the newest byte
// until the digest is verified.
func (p *passShare) releasableLocked() (int64, error) {
	switch {
	case p.done && p.err != nil:
		return 0, p.err
	case p.done:
		return p.head, nil
	}
	return p.head - 1, nil
}

// detach removes r; the download stops when its last client leaves.
func (p *passShare) detach(r *passReader) {
	g := &p.s.passes
	g.mu.Lock()
	p.mu.Lock()
	delete(p.readers, r)
	last := len(p.readers) == 0 && p.reserved == 0 && !p.done
	cancel := p.cancel
	if last {
		p.gone = true
		if g.shares[p.digest] == p {
			delete(g.shares, p.digest)
		}
	}
	p.releaseLocked()
	p.mu.Unlock()
	g.mu.Unlock()
	p.room.Broadcast()
	if last && cancel != nil {
		cancel()
	}
}

// passReader is one client of a passShare.
type passReader struct {
	p      *passShare
	prefix io.ReaderAt // the blob's bytes before p.base, when the client has them
	off    int64
	end    int64 // exclusive; -1 = the blob's end
	cut    bool  // fell behind the window; guarded by p.mu
	sent   int64
	err    error
	closed bool

	onClose func(sent int64, err error)
}

// seek moves a client that has not read yet to off (its range's start,
// known once the size is). Moving forward never loses the window.
func (r *passReader) seek(off, end int64) {
	r.p.mu.Lock()
	r.off, r.end = max(off, r.off), end
	r.p.mu.Unlock()
	r.p.room.Broadcast()
}

func (r *passReader) Read(b []byte) (int, error) {
	n, err := r.read(b)
	r.sent += int64(n)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

func (r *passReader) read(b []byte) (int, error) {
	p := r.p
	p.mu.Lock()
	for {
		if r.end >= 0 && r.off >= r.end {
			p.mu.Unlock()
			return 0, io.EOF
		}
		if r.cut {
			p.mu.Unlock()
			return 0, errFellBehind
		}
		if r.off < p.base { // from the local prefix, outside the lock
			n := min(int64(len(b)), p.base-r.off)
			if r.end >= 0 {
				n = min(n, r.end-r.off)
			}
			off := r.off
			p.mu.Unlock()
			m, err := r.prefix.ReadAt(b[:n], off)
			if err == io.EOF && int64(m) == n {
				err = nil
			}
			p.mu.Lock()
			r.off += int64(m)
			p.mu.Unlock()
			return m, err
		}
		if r.off < p.tailLocked() {
			r.cut = true
			continue
		}
		limit, err := p.releasableLocked()
		if err != nil {
			p.mu.Unlock()
			return 0, err
		}
		if r.end >= 0 {
			limit = min(limit, r.end)
		}
		if limit > r.off {
			n := 0
			for n < len(b) && r.off < limit {
				i := r.off % p.window
				c := copy(b[n:], p.ring[i:min(p.window, i+limit-r.off)])
				n += c
				r.off += int64(c)
			}
			wake := p.roomWait
			p.mu.Unlock()
			if wake {
				p.room.Signal() // the download may wait for this client
			}
			return n, nil
		}
		if p.done {
			p.mu.Unlock()
			return 0, io.EOF
		}
		p.data.Wait()
	}
}

// WriteTo copies the client's bytes to w through one buffer of its own
// (fasthttp prefers it to Read): copies out of the window are taken under
// the lock, writes to the client outside it, in chunks far larger than
// fasthttp's write buffer.
func (r *passReader) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, fillBufferSize)
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				r.err = werr
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close detaches the client; fasthttp calls it when the response ends or
// the client goes away.
func (r *passReader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.p.detach(r)
	if r.onClose != nil {
		r.onClose(r.sent, r.err)
		r.onClose = nil
	}
	return nil
}

// isNoSpace tells a fill that failed for lack of disk space.
func isNoSpace(err error) bool { return errors.Is(err, cache.ErrNoSpace) }
