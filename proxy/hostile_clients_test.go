package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regmirror/regmirror/internal/testupstream"
)

// TestHostileClients: one mirror, attacked as a client would (issue 8):
// absurd ranges on a hit, on a download in progress and on HEAD, and a
// thousand connections from one address. It never stops serving.
func TestHostileClients(t *testing.T) {
	const size = 1 << 20
	up := testupstream.Start(t)
	_, hit := up.PushLargeBlobImage(t, "library/hit", "latest", size)
	_, filling := up.PushLargeBlobImage(t, "library/filling", "latest", size+1)
	_, headOnly := up.PushLargeBlobImage(t, "library/head", "latest", size+2)
	const perIP = 64
	m := startMirror(t, up, func(c *mirrorSetup) { c.MaxConnectionsPerIP = perIP })
	hitURL := m.url + "/v2/library/hit/blobs/" + hit.String()
	wantHit, _ := io.ReadAll(testupstream.LargeBlobReader("library/hit:latest", size))
	send(t, http.MethodGet, hitURL)
	eventually(t, "the blob to be cached", func() bool { return blobFiles(t, m.dataDir)[hit.Encoded()] })

	alive := func(t *testing.T) {
		t.Helper()
		http.DefaultClient.CloseIdleConnections()
		resp, body := send(t, http.MethodGet, hitURL, "Range", "bytes=0-9")
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, wantHit[:10]) {
			t.Fatalf("the mirror no longer serves: %d %q", resp.StatusCode, body)
		}
	}

	t.Run("ranges", func(t *testing.T) {
		const maxInt64 = "9223372036854775807"
		type rangeCase struct {
			header     string
			status     int
			start, end int64 // served part, for 206 and 200
		}
		casesFor := func(size int64) []rangeCase {
			return []rangeCase{
				{"bytes=0-" + maxInt64, 206, 0, size},
				{"bytes=1-" + maxInt64, 206, 1, size},
				{"bytes=-" + maxInt64, 206, 0, size},
				{"bytes=" + maxInt64 + "-", 416, 0, 0},
				{"bytes=" + maxInt64 + "-" + maxInt64, 416, 0, 0},
				{"bytes=0-99999999999999999999", 416, 0, 0},
				{"bytes=" + strconv.FormatInt(size, 10) + "-", 416, 0, 0},
				{"bytes=-0", 416, 0, 0},
				{"bytes=5-1", 416, 0, 0},
				{"bytes=0-1,4-5", 200, 0, size},
				{"items=0-1", 200, 0, size},
				{"bytes=10-19", 206, 10, 20},
			}
		}
		check := func(t *testing.T, method, url string, size int64, want []byte, c rangeCase) {
			t.Helper()
			resp, body := send(t, method, url, "Range", c.header)
			what := fmt.Sprintf("%s %q", method, c.header)
			if resp.StatusCode != c.status {
				t.Errorf("%s: status %d, want %d (%s)", what, resp.StatusCode, c.status, body)
				return
			}
			switch c.status {
			case 416:
				if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes */%d", size) {
					t.Errorf("%s: Content-Range %q, want bytes */%d", what, cr, size)
				}
				if method == http.MethodGet {
					wantWireError(t, resp, body, 416, "RANGE_INVALID")
				}
				return
			case 206:
				if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", c.start, c.end-1, size) {
					t.Errorf("%s: Content-Range %q", what, cr)
				}
			}
			if resp.ContentLength != c.end-c.start {
				t.Errorf("%s: Content-Length %d, want %d", what, resp.ContentLength, c.end-c.start)
			}
			if method == http.MethodGet && want != nil && !bytes.Equal(body, want[c.start:c.end]) {
				t.Errorf("%s: %d bytes, not the blob's [%d,%d)", what, len(body), c.start, c.end)
			}
		}

		t.Run("hit", func(t *testing.T) {
			for _, c := range casesFor(size) {
				check(t, http.MethodGet, hitURL, size, wantHit, c)
				check(t, http.MethodHead, hitURL, size, nil, c)
			}
		})
		t.Run("HEAD of a blob not cached", func(t *testing.T) {
			url := m.url + "/v2/library/head/blobs/" + headOnly.String()
			for _, c := range casesFor(size + 2) {
				check(t, http.MethodHead, url, size+2, nil, c)
			}
			if n := up.BlobGETs(headOnly); n != 0 {
				t.Errorf("HEADs downloaded the blob %d times", n)
			}
		})
		t.Run("download in progress", func(t *testing.T) {
			url := m.url + "/v2/library/filling/blobs/" + filling.String()
			want, _ := io.ReadAll(testupstream.LargeBlobReader("library/filling:latest", size+1))
			gate := up.Gate(filling).SetHeadBytes(4096)
			resp, _ := startDownload(t, url, 100)
			defer resp.Body.Close()
			for _, c := range casesFor(size + 1) {
				if c.status != 416 {
					continue // their bodies wait for the gate; below
				}
				check(t, http.MethodGet, url, size+1, nil, c)
				check(t, http.MethodHead, url, size+1, nil, c)
			}
			// Headers of a satisfiable range come while the body is held.
			type answer struct {
				resp *http.Response
				err  error
			}
			answers := make(chan answer, 1)
			go func() {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header.Set("Range", "bytes=1-"+maxInt64)
				r, err := http.DefaultClient.Do(req)
				answers <- answer{r, err}
			}()
			a := <-answers
			if a.err != nil {
				t.Fatal(a.err)
			}
			defer a.resp.Body.Close()
			if a.resp.StatusCode != 206 || a.resp.ContentLength != size || a.resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1-%d/%d", size, size+1) {
				t.Errorf("overflowing range on a download in progress: %d, length %d, %q", a.resp.StatusCode, a.resp.ContentLength, a.resp.Header.Get("Content-Range"))
			}
			gate.Open()
			body, err := io.ReadAll(a.resp.Body)
			if err != nil || !bytes.Equal(body, want[1:]) {
				t.Errorf("overflowing range on a download in progress: %d bytes, %v", len(body), err)
			}
			if n := up.BlobGETs(filling); n != 1 {
				t.Errorf("upstream GETs of the filling blob = %d, want 1", n)
			}
		})
		alive(t)
	})

	t.Run("a thousand connections", func(t *testing.T) {
		const conns = 1000
		http.DefaultClient.CloseIdleConnections()
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for i := 0; i < conns; i++ {
			c, err := net.Dial("tcp", m.host)
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			held = append(held, c)
		}
		// The first perIP are served; the rest were answered 429 and closed.
		var refused atomic.Int32
		var wg sync.WaitGroup
		deadline := time.Now().Add(2 * time.Second)
		for _, c := range held {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.SetReadDeadline(deadline)
				b, _ := io.ReadAll(io.LimitReader(c, 12))
				if string(b) == "HTTP/1.1 429" {
					refused.Add(1)
				}
			}()
		}
		wg.Wait()
		if n := int(refused.Load()); n < conns-perIP || n == conns {
			t.Errorf("%d of %d connections refused, want all but at most %d", n, conns, perIP)
		}
		for _, c := range held {
			c.Close()
		}
		held = nil
		alive(t)
	})
}

// TestUpstreamTimeoutsAnswer504: an upstream that does not answer in time
// gets 504 on every path, one that answers 503 gets 503; never 500 (issue 8).
func TestUpstreamTimeoutsAnswer504(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/slow", "latest", 1, 1024)
	d := testupstream.Digest(t, img)
	layer := testupstream.LayerDigests(t, img)[0]
	m := startMirror(t, up, func(c *mirrorSetup) {
		// Long enough for the upstream client's retries of a 5xx
		// (0.2s+0.4s+0.8s, with jitter) to end before it.
		c.UpstreamTimeout = 3 * time.Second
		c.FillTimeout = 3 * time.Second
		c.RevalidateTimeout = 3 * time.Second
		// No outage memory: each path asks upstream itself.
		c.OutageBackoff = time.Nanosecond
	})
	paths := []struct{ method, path string }{
		{http.MethodGet, "/v2/library/slow/manifests/latest"},
		{http.MethodHead, "/v2/library/slow/manifests/latest"},
		{http.MethodGet, "/v2/library/slow/manifests/" + d.String()},
		{http.MethodHead, "/v2/library/slow/manifests/" + d.String()},
		{http.MethodGet, "/v2/library/slow/blobs/" + layer.String()},
		{http.MethodHead, "/v2/library/slow/blobs/" + layer.String()},
		{http.MethodGet, "/v2/library/slow/tags/list"},
		{http.MethodGet, "/v2/library/slow/referrers/" + d.String()},
	}
	check := func(status int) {
		t.Helper()
		var wg sync.WaitGroup
		for _, p := range paths {
			wg.Add(1)
			go func() { // in parallel: each waits out the timeout
				defer wg.Done()
				resp, body := send(t, p.method, m.url+p.path)
				if resp.StatusCode != status {
					t.Errorf("%s %s: status %d, want %d (%s)", p.method, p.path, resp.StatusCode, status, body)
					return
				}
				if p.method == http.MethodGet {
					wantWireError(t, resp, body, status, "UNAVAILABLE")
				}
			}()
		}
		wg.Wait()
	}
	up.SetLatency(time.Minute)
	check(http.StatusGatewayTimeout)
	up.SetLatency(0)
	up.SetStatus(http.StatusServiceUnavailable, "")
	check(http.StatusServiceUnavailable)
	up.SetStatus(0, "")
	if got := pullAll(t, m, "library/slow:latest"); got != d {
		t.Fatalf("after the outage: pulled %s, want %s", got, d)
	}
}
