package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testupstream"
)

// blobConn is a raw client connection that asked for a blob: its response
// has been read up to the headers (the whole body for an error).
type blobConn struct {
	net.Conn
	resp *http.Response
	body []byte // an error's body
}

// getBlobFrom asks m for blob d of repo over a connection of its own from
// local address from (any 127/8 address: each is a client address of its
// own to the mirror), with header name/value pairs.
func getBlobFrom(t *testing.T, m *testMirror, from, repo string, d digest.Digest, hdr ...string) *blobConn {
	t.Helper()
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := dialer.Dial("tcp", m.host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := fmt.Sprintf("GET /v2/%s/blobs/%s HTTP/1.1\r\nHost: x\r\n", repo, d)
	for i := 0; i+1 < len(hdr); i += 2 {
		req += hdr[i] + ": " + hdr[i+1] + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", d, from, err)
	}
	bc := &blobConn{Conn: c, resp: resp}
	if resp.StatusCode != http.StatusOK {
		bc.body, _ = io.ReadAll(resp.Body)
		c.Close()
	}
	return bc
}

// wantRefusal checks a cap's refusal: status, registry JSON code and a
// Retry-After.
func wantRefusal(t *testing.T, c *blobConn, status int, code string) {
	t.Helper()
	if c.resp.StatusCode != status {
		t.Fatalf("status %d (%s), want %d", c.resp.StatusCode, c.body, status)
	}
	if got := registryError(t, c.body); got != code {
		t.Fatalf("code %s, want %s", got, code)
	}
	if c.resp.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After on a refusal clients should retry")
	}
}

func wantOK(t *testing.T, c *blobConn) {
	t.Helper()
	if c.resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d (%s), want 200", c.resp.StatusCode, c.body)
	}
}

// gatedBlobs pushes n images of one blob each (repo library/img<i>), every
// blob held by a gate after its first KiB. Open them (up.ClearFaults)
// before the mirror stops, or its shutdown waits for the held clients.
func gatedBlobs(t *testing.T, up *testupstream.Server, n int, size int64) ([]digest.Digest, []*testupstream.Gate) {
	ds := make([]digest.Digest, n)
	gates := make([]*testupstream.Gate, n)
	for i := range ds {
		_, ds[i] = up.PushLargeBlobImage(t, fmt.Sprintf("library/img%d", i), "latest", size+int64(i))
		gates[i] = up.Gate(ds[i]).SetHeadBytes(1024)
	}
	return ds, gates
}

// TestPassThroughBudget: while the disk is full every miss is a
// pass-through; their windows together stay within PassThroughMemory, one
// more is refused (503, Retry-After), joining one is not, and a window
// goes back to the budget when its download ends, exactly once, whether
// its clients left or read it all.
func TestPassThroughBudget(t *testing.T) {
	const window = 256 << 10 // over the 64 KiB a download puts at once
	up := testupstream.Start(t)
	ds, gates := gatedBlobs(t, up, 6, 4*window)
	m := startMirror(t, up, func(c *mirrorSetup) { c.PassThroughMemory = 2 * (window + passShareOverhead) })
	t.Cleanup(up.ClearFaults)
	m.Server.passes.window = window
	m.Server.diskFullUntil.Store(time.Now().Add(time.Hour).UnixNano())
	get := func(i int) *blobConn {
		return getBlobFrom(t, m, "127.0.0.1", fmt.Sprintf("library/img%d", i), ds[i])
	}
	c0, c1 := get(0), get(1)
	wantOK(t, c0)
	wantOK(t, c1)
	wantRefusal(t, get(2), http.StatusServiceUnavailable, "UNAVAILABLE")
	joiner := get(0)
	wantOK(t, joiner)
	// Every client of blob 0 leaves; the mirror notices when the download
	// moves on (it writes to them), and stops it: its window is free.
	c0.Close()
	joiner.Close()
	gates[0].Open()
	var c2 *blobConn
	eventually(t, "the abandoned window to go back", func() bool {
		c2 = get(2)
		return c2.resp.StatusCode == http.StatusOK
	})
	wantRefusal(t, get(3), http.StatusServiceUnavailable, "UNAVAILABLE")
	// Blobs 1 and 2 are read whole.
	gates[1].Open()
	gates[2].Open()
	for i, c := range []*blobConn{c1, c2} {
		got, err := io.ReadAll(c.resp.Body)
		if err != nil || digest.FromBytes(got) != ds[i+1] {
			t.Fatalf("blob %d: %d bytes, %v", i+1, len(got), err)
		}
		c.Close()
	}
	// Exactly the whole budget is back: two windows, not three.
	eventually(t, "the windows read whole to go back", func() bool { return passBudgetUsed(m.Server) == 0 })
	wantOK(t, get(3))
	wantOK(t, get(4))
	wantRefusal(t, get(5), http.StatusServiceUnavailable, "UNAVAILABLE")
}

// TestPassThroughWindowFitsTheBlob: a pass-through of a blob smaller than
// the window holds a window of the blob's size, not a whole one.
func TestPassThroughWindowFitsTheBlob(t *testing.T) {
	const size = 16 << 10
	up := testupstream.Start(t)
	_, d := up.PushLargeBlobImage(t, "library/small", "latest", size)
	gate := up.Gate(d).SetHeadBytes(1024)
	defer gate.Open()
	s, rq := passServer(t, up, "library/small", d)
	r := openPass(t, s, rq, nil, 0, 0, -1)
	var one [1]byte
	if _, err := io.ReadFull(r, one[:]); err != nil { // bytes are in the window
		t.Fatal(err)
	}
	r.p.mu.Lock()
	ring := len(r.p.ring)
	r.p.mu.Unlock()
	if ring > size {
		t.Fatalf("a window of %d bytes for a blob of %d", ring, size)
	}
}

// passBudgetUsed is the bytes of windows s's pass-throughs hold.
func passBudgetUsed(s *Server) int64 {
	s.passes.mu.Lock()
	defer s.passes.mu.Unlock()
	return s.passes.used
}

// TestPassWindowReturnedOnce: a share's window goes back to the budget
// exactly once, when its download has ended and its last client left,
// however it ends: read whole, failed, abandoned, or with a client cut for
// lagging; a refused pass-through takes nothing.
func TestPassWindowReturnedOnce(t *testing.T) {
	const size, window = 1 << 20, 128 << 10
	up := testupstream.Start(t)
	_, d := up.PushLargeBlobImage(t, "library/big", "latest", size)
	_, other := up.PushLargeBlobImage(t, "library/other", "latest", size)
	s, rq := passServer(t, up, "library/big", d)
	s.passes.window, s.passes.lagWait = window, 300*time.Millisecond
	wantUsed := func(what string, n int64) {
		t.Helper()
		eventually(t, what, func() bool { return passBudgetUsed(s) == n })
	}
	r := openPass(t, s, rq, nil, 0, 0, -1)
	if got, err := io.ReadAll(r); err != nil || digest.FromBytes(got) != d {
		t.Fatalf("read whole: %d bytes, %v", len(got), err)
	}
	wantUsed("a window while its client is attached", window+passShareOverhead)
	r.Close()
	wantUsed("the window of a blob read whole to go back", 0)

	up.CorruptBlobs(true)
	r = openPass(t, s, rq, nil, 0, 0, -1)
	if _, err := io.ReadAll(r); err == nil {
		t.Fatal("a corrupt blob read whole")
	}
	r.Close()
	up.CorruptBlobs(false)
	wantUsed("the window of a failed download to go back", 0)

	gate := up.Gate(d).SetHeadBytes(1024)
	r = openPass(t, s, rq, nil, 0, 0, -1)
	r.Close()
	wantUsed("the window of an abandoned download to go back", 0)
	gate.Open()

	fast, slow := openPass(t, s, rq, nil, 0, 0, -1), openPass(t, s, rq, nil, 0, 0, -1)
	if got, err := io.ReadAll(fast); err != nil || digest.FromBytes(got) != d {
		t.Fatalf("the client that kept up: %d bytes, %v", len(got), err)
	}
	if _, err := io.ReadAll(slow); !errors.Is(err, errFellBehind) {
		t.Fatalf("the stalled client: %v, want cut", err)
	}
	fast.Close()
	wantUsed("the window to go back once its last client left", 0)
	slow.Close()
	wantUsed("the cut client's close to give nothing back twice", 0)

	s.opts.PassThroughMemory = window + passShareOverhead
	up.Gate(d).SetHeadBytes(1024)
	held := openPass(t, s, rq, nil, 0, 0, -1)
	refused := s.joinPass(request{up: rq.up, registry: rq.registry, repo: "library/other", ref: reference{digest: other}}, reasonDiskFull, nil, 0, 0, -1)
	if _, err := refused.p.startResult(); !errors.Is(err, errPassThroughMemory) {
		t.Fatalf("over the budget: %v, want refused", err)
	}
	refused.Close()
	wantUsed("a refusal to take nothing", window+passShareOverhead)
	held.Close()
	up.ClearFaults()
	wantUsed("the held window to go back", 0)
}

// noRoom says no blob can be cached: every fill hands its body to a
// pass-through.
type noRoom struct{}

func (noRoom) Hold(digest.Digest) func()           { return func() {} }
func (noRoom) NoSpace(context.Context, int64) bool { return false }
func (noRoom) CanFit(size int64) error             { return fmt.Errorf("%d bytes: no room", size) }

// TestCannotFitWithinBudget: a fill whose blob cannot fit hands its body
// to a pass-through only within the memory budget; over it, the fill's
// clients get 503 with Retry-After.
func TestCannotFitWithinBudget(t *testing.T) {
	const window = 256 << 10
	up := testupstream.Start(t)
	ds, _ := gatedBlobs(t, up, 2, 1<<20)
	m := startMirror(t, up, func(c *mirrorSetup) { c.PassThroughMemory, c.Hooks = window, noRoom{} })
	t.Cleanup(up.ClearFaults)
	m.Server.passes.window = window
	wantOK(t, getBlobFrom(t, m, "127.0.0.1", "library/img0", ds[0]))
	wantRefusal(t, getBlobFrom(t, m, "127.0.0.1", "library/img1", ds[1]), http.StatusServiceUnavailable, "UNAVAILABLE")
}
