package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/upstream"
)

// readOdd reads r through buffers of changing small sizes, as a slow or
// fragmented client connection would.
func readOdd(r io.Reader) ([]byte, error) {
	var out bytes.Buffer
	for i := 0; ; i++ {
		buf := make([]byte, 1+i%7)
		if i%50 == 0 {
			buf = make([]byte, 64<<10)
		}
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

// passServer is a Server on a fresh cache in front of up, and the request
// for blob d of repo.
func passServer(t *testing.T, up *testupstream.Server, repo string, d digest.Digest) (*Server, request) {
	t.Helper()
	s, _, reg := serverInFrontOf(t, up.URL())
	return s, request{up: reg, registry: "docker.io", repo: repo, ref: reference{digest: d}}
}

// openPass joins the shared pass-through like a client of range [off, end).
func openPass(t *testing.T, s *Server, rq request, prefix io.ReaderAt, prefixEnd, off, end int64) *passReader {
	t.Helper()
	r := s.joinPass(rq, reasonDiskFull, prefix, prefixEnd, off, -1)
	if _, err := r.p.startResult(); err != nil {
		r.Close()
		t.Fatalf("pass-through start: %v", err)
	}
	r.seek(off, end)
	t.Cleanup(func() { r.Close() })
	return r
}

func TestPassThrough(t *testing.T) {
	const size = 1<<20 + 3
	up := testupstream.Start(t)
	_, d := up.PushLargeBlobImage(t, "library/big", "latest", size)
	want, _ := io.ReadAll(testupstream.LargeBlobReader("library/big:latest", size))
	s, rq := passServer(t, up, "library/big", d)
	s.passes.window = 256 << 10 // smaller than the blob: the ring wraps

	t.Run("whole blob through tiny reads", func(t *testing.T) {
		got, err := readOdd(openPass(t, s, rq, nil, 0, 0, -1))
		if err != nil || digest.FromBytes(got) != d {
			t.Fatalf("got %d bytes, digest %s, err %v", len(got), digest.FromBytes(got), err)
		}
	})
	t.Run("the rest after a local prefix", func(t *testing.T) {
		const from = 300000
		before := up.BlobGETs(d)
		got, err := readOdd(openPass(t, s, rq, bytes.NewReader(want[:from]), from, from, -1))
		if err != nil || !bytes.Equal(got, want[from:]) {
			t.Fatalf("got %d bytes, err %v", len(got), err)
		}
		if up.BlobGETs(d) != before+1 {
			t.Fatalf("%d upstream GETs", up.BlobGETs(d)-before)
		}
	})
	t.Run("a range short of the end", func(t *testing.T) {
		got, err := readOdd(openPass(t, s, rq, nil, 0, 1000, 5000))
		if err != nil || !bytes.Equal(got, want[1000:5000]) {
			t.Fatalf("got %d bytes, err %v", len(got), err)
		}
	})
	t.Run("corrupt upstream never yields the whole body", func(t *testing.T) {
		up.CorruptBlobs(true)
		defer up.CorruptBlobs(false)
		counting := &refuteCounting{Upstream: rq.up}
		crq := rq
		crq.up = counting
		got, err := readOdd(openPass(t, s, crq, nil, 0, 0, -1))
		if !errors.Is(err, cache.ErrDigestMismatch) {
			t.Fatalf("err = %v, want a digest mismatch", err)
		}
		if len(got) >= size {
			t.Fatalf("client received %d of %d bytes of a corrupt blob", len(got), size)
		}
		if n := counting.refuted.Load(); n != 1 {
			t.Fatalf("the corrupt body was refuted %d times, want once", n)
		}
		// After a local prefix, or a resume, no body is the whole: no
		// source is named.
		_, err = readOdd(openPass(t, s, crq, bytes.NewReader(want[:300000]), 300000, 300000, -1))
		if !errors.Is(err, cache.ErrDigestMismatch) || counting.refuted.Load() != 1 {
			t.Fatalf("after a prefix: err %v, refuted %d times, want a mismatch and still once", err, counting.refuted.Load())
		}
		up.CutBlobsAfter(size / 2) // every body is cut halfway: the pass-through resumes
		defer up.CutBlobsAfter(-1)
		_, err = readOdd(openPass(t, s, crq, nil, 0, 0, -1))
		if !errors.Is(err, cache.ErrDigestMismatch) || counting.refuted.Load() != 1 {
			t.Fatalf("after a resume: err %v, refuted %d times, want a mismatch and still once", err, counting.refuted.Load())
		}
	})
}

// refuteCounting gives every body a Refute that counts: the caller alone
// decides which body was the whole.
type refuteCounting struct {
	Upstream
	refuted atomic.Int32
}

func (u *refuteCounting) GetBlob(ctx context.Context, repo string, d digest.Digest, offset int64) (*upstream.Blob, error) {
	b, err := u.Upstream.GetBlob(ctx, repo, d, offset)
	if err == nil {
		b.Refute = func() { u.refuted.Add(1) }
	}
	return b, err
}

// TestPassThroughSharedAndBounded: clients of one digest share one upstream
// GET; a client that leaves does not stop the others; a client that stops
// reading is cut once it holds the window longer than the lag allowance,
// and memory stays one window whatever the blob's size.
func TestPassThroughSharedAndBounded(t *testing.T) {
	const size = 2<<20 + 5
	up := testupstream.Start(t)
	_, d := up.PushLargeBlobImage(t, "library/big", "latest", size)
	s, rq := passServer(t, up, "library/big", d)
	s.passes.window = 128 << 10
	s.passes.lagWait = time.Second
	gate := up.Gate(d).SetHeadBytes(1000)

	readers := make([]*passReader, 4)
	for i := range readers {
		readers[i] = s.joinPass(rq, reasonCannotFit, nil, 0, 0, -1)
	}
	if readers[0].p != readers[3].p {
		t.Fatal("clients of one digest got different downloads")
	}
	<-gate.Arrived()
	for _, r := range readers {
		if _, err := r.p.startResult(); err != nil {
			t.Fatal(err)
		}
	}
	var first [1]byte
	if _, err := io.ReadFull(readers[2], first[:]); err != nil {
		t.Fatal(err)
	}
	readers[3].Close() // gone mid-download
	gate.Open()
	// readers[2] reads no more: it is cut when it holds the window.
	got0, err0 := readAsync(readers[0])
	got1, err1 := readAsync(readers[1])
	for _, c := range []struct {
		got chan []byte
		err chan error
	}{{got0, err0}, {got1, err1}} {
		got, err := <-c.got, <-c.err
		if err != nil || digest.FromBytes(got) != d {
			t.Fatalf("a client got %d bytes, digest %s, err %v", len(got), digest.FromBytes(got), err)
		}
	}
	if _, err := io.ReadAll(readers[2]); !errors.Is(err, errFellBehind) {
		t.Fatalf("the stalled client: %v, want cut", err)
	}
	readers[2].Close()
	if n := up.BlobGETs(d); n != 1 {
		t.Fatalf("%d upstream GETs for 4 clients", n)
	}
	if n := int64(len(readers[0].p.ring)); n != s.passes.window {
		t.Fatalf("window of %d bytes, want %d", n, s.passes.window)
	}
}

// TestPassThroughCompletedStillJoinable: a client that reaches a handed-off
// download after it completed (a blob smaller than the window) is served
// from the window, not by a second upstream download.
func TestPassThroughCompletedStillJoinable(t *testing.T) {
	const size = 100 << 10
	up := testupstream.Start(t)
	_, d := up.PushLargeBlobImage(t, "library/small", "latest", size)
	s, rq := passServer(t, up, "library/small", d)
	first := openPass(t, s, rq, nil, 0, 0, -1)
	if got, err := io.ReadAll(first); err != nil || digest.FromBytes(got) != d {
		t.Fatalf("first client: %d bytes, %v", len(got), err)
	}
	<-first.p.started
	first.p.mu.Lock()
	for !first.p.done {
		first.p.data.Wait()
	}
	first.p.mu.Unlock()
	late := s.joinPassVia(first.p, false, rq, reasonCannotFit, nil, 0, 0, -1)
	defer late.Close()
	if late.p != first.p {
		t.Fatal("the late client started another download")
	}
	if got, err := io.ReadAll(late); err != nil || digest.FromBytes(got) != d {
		t.Fatalf("late client: %d bytes, %v", len(got), err)
	}
	if n := up.BlobGETs(d); n != 1 {
		t.Fatalf("%d upstream GETs", n)
	}
}

// readers is how many clients read the joinable pass-through of d.
func (g *passGroup) readers(d digest.Digest) int {
	p := g.joinable(d)
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.readers)
}

// endedFill is a fill of d that has ended with err, its body committed to
// s's cache when err is nil.
func endedFill(t *testing.T, s *Server, d digest.Digest, content []byte, err error) *fill {
	t.Helper()
	w, cerr := s.blobs.Create(d, "application/octet-stream")
	if cerr != nil {
		t.Fatal(cerr)
	}
	if _, werr := w.Write(content); werr != nil {
		t.Fatal(werr)
	}
	f := newFill(d, w)
	f.start(int64(len(content)))
	if err == nil {
		if _, cerr := w.Commit(int64(len(content))); cerr != nil {
			t.Fatal(cerr)
		}
	} else {
		w.Cancel()
	}
	f.finish(err)
	return f
}

// TestClientOfAnEndedFill: a client that joined a fill just as it ended,
// and opens the blob only after, gets the blob even when the fill ran out
// of disk space (from the pass-through, as the fill's followers do), and
// when the blob was evicted between the commit and the client's open it
// gets errFillEvicted, on which blobDownload starts a new download: never
// an error for a blob upstream has.
func TestClientOfAnEndedFill(t *testing.T) {
	up := testupstream.Start(t)
	img, layer := up.PushLargeBlobImage(t, "library/big", "latest", 64<<10)
	l, err := img.LayerByDigest(v1.Hash{Algorithm: "sha256", Hex: layer.Encoded()})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	s, rq := passServer(t, up, "library/big", layer)
	serve := func(f *fill) (reply, error) {
		var ctx fasthttp.RequestCtx
		ctx.Request.SetRequestURI("/v2/library/big/blobs/" + layer.String())
		return s.serveEndedFill(&ctx, newExchange(s, &ctx), rq, f)
	}

	r, err := serve(endedFill(t, s, layer, body, fmt.Errorf("writing: %w", cache.ErrNoSpace)))
	if err != nil || r.stream == nil {
		t.Fatalf("a fill that ran out of space: %+v, %v; want the pass-through's stream", r, err)
	}
	got, err := io.ReadAll(r.stream)
	r.stream.(io.Closer).Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("a fill that ran out of space: %d bytes, %v; want the blob", len(got), err)
	}
	f := endedFill(t, s, layer, body, nil)
	if err := s.opts.Store.(*cache.Store).Delete(layer); err != nil {
		t.Fatal(err)
	}
	if _, err := serve(f); !errors.Is(err, errFillEvicted) {
		t.Fatalf("a fill whose blob was evicted at once: %v, want errFillEvicted", err)
	}
}
