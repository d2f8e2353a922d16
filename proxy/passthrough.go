package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
)

// passThrough streams a blob from upstream to one client without caching
// it: the fallback when the disk is full and eviction cannot make room.
// The digest rule still holds: when the client's bytes reach the end of the
// blob, every byte from offset 0 is hashed and the final byte is held back
// until the digest checks out.
type passThrough struct {
	ctx     context.Context
	cancel  context.CancelFunc
	body    io.ReadCloser
	digest  digest.Digest
	h       hash.Hash // nil when the client's range stops short of the end
	pos     int64     // absolute offset of the next byte body yields
	end     int64     // exclusive end of what the client gets; -1 = the blob's end
	buf     []byte    // one fixed buffer: memory does not grow with the blob
	pending []byte    // bytes of buf ready for the client
	last    byte      // the held-back byte
	held    bool
	done    bool // body ended and the digest verified
	err     error
	sent    int64

	onClose func(sent int64, err error)
}

// newPassThrough starts streaming rq's blob from offset from to end (-1 =
// to the end of the blob). prefix, when not nil, yields the blob's bytes
// [0, from) from somewhere local (a follower's temp file), sparing upstream
// a re-send of what the client already has.
func (s *Server) newPassThrough(rq request, prefix io.ReaderAt, from, end, size int64) (*passThrough, error) {
	ctx, cancel := context.WithTimeout(s.fillCtx, s.opts.FillTimeout)
	p := &passThrough{ctx: ctx, cancel: cancel, digest: rq.ref.digest, end: end}
	verify := end < 0 || (size >= 0 && end >= size)
	start := from
	if verify {
		p.h = sha256.New()
		if prefix != nil {
			if _, err := io.Copy(p.h, io.NewSectionReader(prefix, 0, from)); err != nil {
				cancel()
				return nil, err
			}
		} else {
			start = 0 // hash the prefix as it comes from upstream
		}
	}
	blob, err := rq.up.GetBlob(ctx, rq.repo, rq.ref.digest, start)
	if err != nil {
		cancel()
		return nil, err
	}
	p.body, p.pos = blob.Body, blob.Offset
	if p.pos > from {
		p.Close()
		return nil, fmt.Errorf("%w: asked for offset %d, upstream began at %d", errUpstreamCorrupt, from, p.pos)
	}
	// Skip (hashing) whatever upstream sent before the client's offset.
	var skip io.Writer = io.Discard
	if p.h != nil && p.pos < from {
		skip = p.h
	}
	if n, err := io.CopyN(skip, p.body, from-p.pos); err != nil {
		p.Close()
		return nil, fmt.Errorf("reading upstream up to offset %d: %w", from, err)
	} else {
		p.pos += n
	}
	return p, nil
}

func (p *passThrough) Read(b []byte) (int, error) {
	if p.h == nil { // a range short of the end: nothing to verify or hold
		if p.err != nil {
			return 0, p.err
		}
		if p.end >= 0 {
			if p.pos >= p.end {
				return 0, io.EOF
			}
			b = b[:min(int64(len(b)), p.end-p.pos)]
		}
		n, err := p.body.Read(b)
		p.pos += int64(n)
		p.sent += int64(n)
		if err != nil && err != io.EOF {
			p.err = err
		}
		return n, err
	}
	for {
		if len(p.pending) > 0 {
			n := copy(b, p.pending)
			p.pending = p.pending[n:]
			p.sent += int64(n)
			return n, nil
		}
		if p.err != nil {
			return 0, p.err
		}
		if p.done {
			if !p.held {
				return 0, io.EOF
			}
			p.held = false
			b[0] = p.last
			p.sent++
			return 1, nil
		}
		p.refill()
	}
}

// refill reads the next chunk from upstream into buf, hashing it. The
// newest byte is always held back; at the end of the body the digest
// decides whether it is ever released.
func (p *passThrough) refill() {
	if p.buf == nil {
		p.buf = make([]byte, fillBufferSize)
	}
	start := 0
	if p.held {
		p.buf[0], start = p.last, 1
	}
	n, err := p.body.Read(p.buf[start:])
	p.h.Write(p.buf[start : start+n])
	p.pos += int64(n)
	if total := start + n; total > 0 {
		p.last, p.held = p.buf[total-1], true
		p.pending = p.buf[:total-1]
	}
	switch {
	case err == io.EOF:
		if got := digest.NewDigest(digest.SHA256, p.h); got != p.digest {
			p.err = fmt.Errorf("%w: %s", cache.ErrDigestMismatch, got)
			p.pending = nil
			return
		}
		p.done = true
	case err != nil:
		p.err = err
	}
}

func (p *passThrough) Close() error {
	p.cancel()
	if p.body != nil {
		p.body.Close()
	}
	if p.onClose != nil {
		p.onClose(p.sent, p.err)
		p.onClose = nil
	}
	return nil
}

// isNoSpace tells a fill that failed for lack of disk space.
func isNoSpace(err error) bool { return errors.Is(err, cache.ErrNoSpace) }
