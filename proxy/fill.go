package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/upstream"
)

// fillBufferSize is the one buffer a fill copies through; memory per fill
// is fixed whatever the blob's size.
const fillBufferSize = 64 << 10

// createRoom is the space asked of eviction when even creating a temp file
// fails for lack of it.
const createRoom = 16 << 20

// maxResumes is how many times in a row a fill resumes a cut upstream body
// with a Range request before it gives up.
const maxResumes = 3

// resumeBudget counts how often a download has gone back to upstream for
// the rest of a body. Cuts are forgiven once bytes flow again; bodies
// dropped for being too slow are not, since a trickle always progresses.
type resumeBudget struct{ cuts, slow int }

// failedGet reports whether a failed request for the rest of a body may
// be retried: only an unavailable upstream, and only after the first byte.
func (b *resumeBudget) failedGet(err error, started bool) bool {
	if !started || !errors.Is(err, upstream.ErrUnavailable) || b.cuts >= maxResumes {
		return false
	}
	b.cuts++
	return true
}

// failedBody reports whether a body that ended early (err) may be resumed.
func (b *resumeBudget) failedBody(err error, progressed bool) bool {
	if errors.Is(err, errUpstreamTooSlow) {
		b.slow++
		return b.slow <= maxResumes
	}
	if progressed {
		b.cuts = 0
	}
	b.cuts++
	return b.cuts <= maxResumes
}

// fill is one upstream download of one digest into the cache. Clients never
// own it: it runs under a context detached from all of them, and each
// client reads the growing temp file through its own follower.
type fill struct {
	digest  digest.Digest
	writer  *cache.Writer
	request request // the request that started it: which upstream and repository
	begun   time.Time

	followers atomic.Int32 // clients reading it now (status page)
	// attached counts the clients whose requests are on it now, waiting
	// for its start included: a fill with none is abandoned (fillcap.go).
	attached atomic.Int32
	starter  fillStarter // who started it

	started     chan struct{} // closed once size or startErr is known
	startedOnce sync.Once

	mu      sync.Mutex
	cond    sync.Cond
	size    int64 // total size, -1 when upstream did not say; valid after started
	written int64
	done    bool
	err     error // why the fill failed; nil after a verified commit

	// waiting counts the clients that entered serveFill; when the blob
	// cannot fit, the first passReserved of them have a place kept in pass,
	// the shared pass-through the fill handed its body to.
	waiting      int
	pass         *passShare
	passReserved int
}

func newFill(d digest.Digest, w *cache.Writer) *fill {
	f := &fill{digest: d, writer: w, started: make(chan struct{}), size: -1}
	f.cond.L = &f.mu
	return f
}

// start publishes the blob's size; followers may now answer their clients.
func (f *fill) start(size int64) {
	f.mu.Lock()
	f.size = size
	f.mu.Unlock()
	f.startedOnce.Do(func() { close(f.started) })
}

func (f *fill) writtenBytes() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written
}

func (f *fill) advance(n int) {
	f.mu.Lock()
	f.written += int64(n)
	f.mu.Unlock()
	f.cond.Broadcast()
}

// finish ends the fill. err == nil means the content was verified and
// committed to the cache.
func (f *fill) finish(err error) {
	f.mu.Lock()
	f.done, f.err = true, err
	f.mu.Unlock()
	f.cond.Broadcast()
	f.startedOnce.Do(func() { close(f.started) })
}

// wait blocks until the fill ends and returns why it failed (nil: the blob
// was verified and committed).
func (f *fill) wait() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for !f.done {
		f.cond.Wait()
	}
	return f.err
}

// enter registers a client of the fill and returns its ticket, which tells
// (see handedOff) whether a place is kept for it in a pass-through.
func (f *fill) enter() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waiting++
	return f.waiting - 1
}

// handedOff returns the pass-through the fill handed its body to, and
// whether the client with ticket has a place kept in it.
func (f *fill) handedOff(ticket int) (*passShare, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pass, ticket < f.passReserved
}

// startResult is what a client needs to answer: the size, or why not.
func (f *fill) startResult() (int64, error) {
	<-f.started
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done && f.err != nil {
		return 0, f.err
	}
	return f.size, nil
}

// releasable blocks until bytes beyond off may be given to a client, and
// returns how far they reach. Until the digest is verified the last byte
// written is held back, so no client can complete a body that may be wrong:
// if verification fails the client sees its connection cut, and retries.
func (f *fill) releasable(off int64) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		if f.done {
			if f.err != nil {
				return 0, f.err
			}
			return f.written, nil
		}
		if f.written-1 > off {
			return f.written - 1, nil
		}
		f.cond.Wait()
	}
}

// follower streams a fill to one client from its own descriptor on the temp
// file. Its Close, called by fasthttp when the response ends or the client
// goes away, releases only this client's resources.
type follower struct {
	fill    *fill
	file    *os.File
	off     int64
	end     int64 // exclusive; -1 = until the fill ends
	sent    int64
	err     error
	onClose func(sent int64, err error)

	// fallback, when set, takes over from upstream if the fill fails for
	// lack of disk space; direct is the stream it returned.
	fallback func(prefix io.ReaderAt, prefixEnd, off, end int64) (*passReader, error)
	direct   *passReader
}

func (r *follower) Read(p []byte) (int, error) {
	if r.direct != nil {
		n, err := r.direct.Read(p)
		r.off += int64(n)
		r.sent += int64(n)
		if err != nil && err != io.EOF {
			r.err = err
		}
		return n, err
	}
	if r.end >= 0 && r.off >= r.end {
		return 0, io.EOF
	}
	limit, err := r.fill.releasable(r.off)
	if err != nil && isNoSpace(err) && r.fallback != nil {
		// The disk filled up under the fill: carry on straight from
		// upstream, with what this client already has read back from the
		// temp file for the digest check.
		if r.direct, err = r.fallback(r.file, r.fill.writtenBytes(), r.off, r.end); err == nil {
			return r.Read(p)
		}
	}
	if err != nil {
		r.err = err
		return 0, err
	}
	if limit <= r.off {
		return 0, io.EOF
	}
	if r.end >= 0 {
		limit = min(limit, r.end)
	}
	if n := limit - r.off; int64(len(p)) > n {
		p = p[:n]
	}
	n, err := r.file.ReadAt(p, r.off)
	r.off += int64(n)
	r.sent += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	if err != nil {
		r.err = err
	}
	return n, err
}

func (r *follower) Close() error {
	if r.direct != nil {
		r.direct.Close()
	}
	err := r.file.Close()
	if r.onClose != nil {
		r.onClose(r.sent, r.err)
		r.onClose = nil
	}
	return err
}

// fillGroup tracks the fills in progress, at most one per digest (and
// the caps' warnings, fillcap.go).
type fillGroup struct {
	mu    sync.Mutex
	fills map[digest.Digest]*fill
	// refusals rate-limits the warning about fills refused over a cap.
	refusals oncePerMinute
}

func (g *fillGroup) get(d digest.Digest) *fill {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fills[d]
}

func (g *fillGroup) put(f *fill) {
	g.mu.Lock()
	g.fills[f.digest] = f
	g.mu.Unlock()
}

func (g *fillGroup) remove(f *fill) {
	g.mu.Lock()
	if g.fills[f.digest] == f {
		delete(g.fills, f.digest)
	}
	g.mu.Unlock()
}

// joinFill returns the fill for rq's digest, starting it for who if none
// runs (within the caps: joining is never refused). It returns nil, nil
// when the blob reached the cache meanwhile. singleflight collapses
// concurrent starts; the fill object carries everything after.
func (s *Server) joinFill(rq request, who fillStarter) (f *fill, joined bool, err error) {
	d := rq.ref.digest
	for attempt := 0; ; attempt++ {
		if f := s.fills.get(d); f != nil {
			return f, true, nil
		}
		v, err, shared := s.flights.Do("fill\x00"+d.String(), func() (any, error) {
			if f := s.fills.get(d); f != nil {
				return f, nil
			}
			if _, err := s.blobs.Stat(d); err == nil {
				return (*fill)(nil), nil
			}
			return s.startFill(rq, who)
		})
		if shared && attempt == 0 && errors.Is(err, errTooManyFillsPerClient) {
			continue // another address's cap, not this client's: its own try
		}
		if err != nil {
			return nil, false, err
		}
		return v.(*fill), shared, nil
	}
}

func (s *Server) startFill(rq request, who fillStarter) (*fill, error) {
	d := rq.ref.digest
	if err := s.admitFill(who); err != nil {
		return nil, err
	}
	if !s.fillsAlive.start() {
		return nil, errStopping
	}
	started := false
	defer func() {
		if !started {
			s.fillsAlive.done()
		}
	}()
	w, err := s.blobs.Create(d, "application/octet-stream")
	if isNoSpace(err) && s.makeRoom(createRoom) {
		w, err = s.blobs.Create(d, "application/octet-stream")
	}
	if err != nil {
		return nil, err
	}
	if s.isPrivate(rq.registry) {
		w.Scope() // kept out of the shared tier
	}
	release := s.hold(d)
	f := newFill(d, w)
	f.request, f.starter = rq, who
	f.begun = s.opts.Now()
	s.fills.put(f)
	s.metrics.fillsInProgress.Inc()
	started = true
	go s.fillInBackground(f, rq, release)
	return f, nil
}

// fillInBackground runs f to its end under its own timeout, detached from
// every client; then it takes f out of the group, wakes its followers, and
// logs and counts how it ended.
func (s *Server) fillInBackground(f *fill, rq request, release func()) {
	defer s.fillsAlive.done()
	defer s.metrics.fillsInProgress.Dec()
	defer release()
	ctx, cancel := context.WithTimeout(s.fillCtx, s.opts.FillTimeout)
	start := time.Now()
	err := s.runFill(ctx, cancel, f, rq)
	if !errors.Is(err, errCannotFit) {
		cancel() // else the pass-through owns ctx, and the body read under it
	}
	if err != nil {
		_ = f.writer.Cancel()
		if isNoSpace(err) {
			s.diskFullUntil.Store(s.opts.Now().Add(diskFullBackoff).UnixNano())
		}
	}
	// Leave the group before waking followers: a request that arrives
	// later finds the blob in the cache, or starts a fresh fill.
	s.fills.remove(f)
	f.finish(err)
	s.fillEnded(f, rq, err, time.Since(start))
}

// fillEnded logs and counts how f ended.
func (s *Server) fillEnded(f *fill, rq request, err error, took time.Duration) {
	if errors.Is(err, errCannotFit) { // not a failed fill: counted as a pass-through
		s.log.Warn("blob cannot fit in the cache: streaming it to its clients without caching or evicting anything", "registry", rq.registry, "repo", rq.repo, "digest", f.digest, "err", err)
		return
	}
	s.metrics.fill(rq.registry, err)
	if err != nil {
		s.log.Warn("fill failed", "registry", rq.registry, "repo", rq.repo, "digest", f.digest, "bytes", f.written, "duration_s", took.Round(time.Millisecond).Seconds(), "err", err)
		return
	}
	s.log.Info("fill done", "registry", rq.registry, "repo", rq.repo, "digest", f.digest, "bytes", f.written, "duration_s", took.Round(time.Millisecond).Seconds())
}

// runFill downloads the blob into f's writer, resuming a cut body with a
// Range request, then verifies and commits it.
func (s *Server) runFill(ctx context.Context, cancel context.CancelFunc, f *fill, rq request) error {
	buf := make([]byte, fillBufferSize)
	var budget resumeBudget
	roomMade := false
	var whole *upstream.Blob // the one body every byte came from, if one did
	for {
		offset := f.writer.Written()
		blob, err := rq.up.GetBlob(ctx, rq.repo, f.digest, offset)
		if err != nil {
			if !budget.failedGet(err, offset > 0) {
				return err
			}
			continue
		}
		if err := s.acceptFillBody(ctx, cancel, f, rq, blob, offset); err != nil {
			return err
		}
		whole = nil // a resume mixes bodies: a wrong whole names no source
		if offset == 0 && blob.Offset == 0 {
			whole = blob
		}
		progressed, err := s.copyBody(ctx, f, s.guardRate(blob.Body), buf, &roomMade)
		blob.Body.Close()
		if err == nil {
			break
		}
		var werr *cacheWriteError
		if errors.As(err, &werr) || errors.Is(err, cache.ErrSizeMismatch) || ctx.Err() != nil {
			return err
		}
		if !budget.failedBody(err, progressed) {
			return err
		}
		s.log.Info("fill resuming", "digest", f.digest, "offset", f.writer.Written(), "err", err)
	}
	err := s.commitFill(f, rq)
	if errors.Is(err, cache.ErrDigestMismatch) && whole != nil {
		whole.Refuted() // the source sent it all: it is told
	}
	return err
}

// acceptFillBody checks an upstream response for f, asked from offset,
// against what the fill knows, and skips what a server that ignored the
// Range sends again. The first response publishes the size; a blob that
// cannot fit in the cache is then handed, body and all, to a shared
// pass-through (errCannotFit). A refused body is closed.
func (s *Server) acceptFillBody(ctx context.Context, cancel context.CancelFunc, f *fill, rq request, blob *upstream.Blob, offset int64) error {
	if err := s.checkAnnouncedSize(rq, f.digest, blob.Size); err != nil {
		blob.Body.Close()
		return err
	}
	blob.Size = s.expectedSize(rq, f.digest, blob.Size)
	switch {
	case offset == 0:
		if err := s.canCache(blob.Size); err != nil {
			// Nothing is written or evicted: the body goes on to a
			// shared pass-through, which this fill's clients join.
			if herr := s.handOff(ctx, cancel, f, rq, blob, reasonCannotFit); herr != nil {
				blob.Body.Close()
				return herr
			}
			return fmt.Errorf("%w: %w", errCannotFit, err)
		}
		f.start(blob.Size)
	case blob.Size >= 0 && f.size >= 0 && blob.Size != f.size:
		blob.Body.Close()
		return fmt.Errorf("%w: %d bytes on resume, %d before", errUpstreamLength, blob.Size, f.size)
	case blob.Offset != offset:
		// The server ignored the Range: skip what we already have.
		if _, err := io.CopyN(io.Discard, blob.Body, offset-blob.Offset); err != nil || blob.Offset > offset {
			blob.Body.Close()
			return fmt.Errorf("%w: resume at %d got a body from %d", upstream.ErrUnavailable, offset, blob.Offset)
		}
	}
	return nil
}

// commitFill checks the size of a complete download, commits it into the
// cache (the writer checks the digest) and records the repository link.
func (s *Server) commitFill(f *fill, rq request) error {
	if f.size >= 0 && f.writer.Written() != f.size {
		return fmt.Errorf("%w: got %d bytes, upstream announced %d", errUpstreamLength, f.writer.Written(), f.size)
	}
	if _, err := f.writer.Commit(f.size); err != nil {
		return err
	}
	if err := s.links.AddLink(rq.registry, rq.repo, f.digest); err != nil {
		s.log.Warn("recording repository link", "digest", f.digest, "err", err)
	}
	return nil
}

// cacheWriteError marks a failure to write to the cache, as opposed to a failure
// to read from upstream (which a Range request may resume).
type cacheWriteError struct{ err error }

func (e *cacheWriteError) Error() string { return "writing to the cache: " + e.err.Error() }
func (e *cacheWriteError) Unwrap() error { return e.err }

// copyBody copies one upstream body into the fill, publishing progress.
// When the disk is full it asks for room once per fill (roomMade) and
// writes the rest; a second full disk fails the fill with ErrNoSpace.
func (s *Server) copyBody(ctx context.Context, f *fill, body io.Reader, buf []byte, roomMade *bool) (progressed bool, err error) {
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if f.size >= 0 && f.writer.Written()+int64(n) > f.size {
				return progressed, fmt.Errorf("%w: upstream sent more than the %d bytes it announced", errUpstreamLength, f.size)
			}
			for p := buf[:n]; len(p) > 0; {
				w, werr := f.writer.Write(p)
				p = p[w:]
				f.advance(w)
				progressed = progressed || w > 0
				if werr == nil {
					continue
				}
				if !isNoSpace(werr) || *roomMade || ctx.Err() != nil {
					return progressed, &cacheWriteError{werr}
				}
				*roomMade = true
				need := int64(len(p))
				if f.size >= 0 {
					need = f.size - f.writer.Written()
				}
				if !s.makeRoom(need) {
					return progressed, &cacheWriteError{werr}
				}
			}
		}
		if rerr == io.EOF {
			return progressed, nil
		}
		if rerr != nil {
			return progressed, rerr
		}
	}
}
