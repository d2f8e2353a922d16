package proxy

import (
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/internal/logline"
	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/upstream"
)

// warmHits is a Server whose cache holds a small image, with the request
// log on (text, to io.Discard, through serve's logger), driven through its
// handler in one goroutine with no network.
type warmHits struct {
	h            fasthttp.RequestHandler
	ctx          fasthttp.RequestCtx
	mpath, bpath string // a manifest by digest and a blob, both cached
}

func newWarmHits(tb testing.TB) *warmHits {
	up := testupstream.Start(tb)
	img := up.PushRandomImage(tb, "library/small", "latest", 1, 512)
	md := testupstream.Digest(tb, img)
	layer := testupstream.LayerDigests(tb, img)[0]
	reg, err := upstream.New(upstream.Options{Name: "docker.io", URL: up.URL()})
	if err != nil {
		tb.Fatal(err)
	}
	log := logline.New(io.Discard, logline.Text, slog.LevelInfo) // serve's logger
	st, err := cache.Open(cache.Options{Dir: tb.TempDir(), Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	s, err := New(Options{Registries: []Upstream{reg}, Store: st, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	w := &warmHits{h: s.Handler(),
		mpath: "/v2/library/small/manifests/" + md.String(),
		bpath: "/v2/library/small/blobs/" + layer.String()}
	w.ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	w.do(tb, "GET", w.mpath)
	w.do(tb, "GET", w.bpath)
	if rc := w.ctx.Response.BodyStream(); rc != nil {
		w.ctx.Response.Reset() // closes the stream
	}
	eventually(tb, "the blob's download to be stored", func() bool { _, err := st.Stat(layer); return err == nil })
	w.do(tb, "HEAD", w.bpath) // from the Store, which makes it hot
	return w
}

func (w *warmHits) do(tb testing.TB, method, uri string) {
	ctx := &w.ctx
	ctx.Request.Reset()
	ctx.Response.Reset()
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(uri)
	ctx.Request.Header.SetUserAgent("regmirror-bench")
	ctx.Request.Header.SetHost("127.0.0.1:5000") // every client sends one
	w.h(ctx)
	if ctx.Response.StatusCode() != 200 {
		tb.Fatalf("%s %s: %d %s", method, uri, ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

// BenchmarkSmallHits runs warm small requests through the handler in one
// goroutine, no network: what one manifest GET by digest and one blob HEAD
// cost the server, with the request log on, and how many allocations
// (-benchmem; TestWarmHitsAllocateNothing holds them at none).
//
//	go test -run '^$' -bench SmallHits -benchmem ./proxy/
func BenchmarkSmallHits(b *testing.B) {
	w := newWarmHits(b)
	for _, tc := range []struct{ name, method, uri string }{
		{"manifest-get", "GET", w.mpath},
		{"blob-head", "HEAD", w.bpath},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w.do(b, tc.method, tc.uri)
			}
		})
	}
}

// BenchmarkSmallHitsParallel is BenchmarkSmallHits on every core at once,
// alternating the two requests: what the hit path's shared state (locks,
// counters, tables) costs when two cores answer together. On two cores
// ns/op near BenchmarkSmallHits' means the cores mostly wait on each
// other; near half of it, that they do not.
//
//	go test -run '^$' -bench SmallHitsParallel -cpu 1,2 ./proxy/
func BenchmarkSmallHitsParallel(b *testing.B) {
	w := newWarmHits(b)
	b.RunParallel(func(pb *testing.PB) {
		own := &warmHits{h: w.h}
		own.ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
		for i := 0; pb.Next(); i++ {
			if i%2 == 0 {
				own.do(b, "GET", w.mpath)
			} else {
				own.do(b, "HEAD", w.bpath)
			}
		}
	})
}

// A warm manifest GET by digest and a warm blob HEAD allocate nothing
// (issue 14: no per-request allocation a pool or a precomputed value
// removes). AllocsPerRun rounds down, so 0 is "fewer than one per
// request": nothing per request, with room for a background goroutine's
// stray allocation. Under the race detector a warm request allocates ~1.25
// times (sync.Pool drops a quarter of what it is given, and the detector
// allocates), so there the limit only catches one more per request.
func TestWarmHitsAllocateNothing(t *testing.T) {
	w := newWarmHits(t)
	limit := 0.0
	if raceEnabled {
		limit = 2
	}
	for _, tc := range []struct{ method, uri string }{{"GET", w.mpath}, {"HEAD", w.bpath}} {
		if n := testing.AllocsPerRun(200, func() { w.do(t, tc.method, tc.uri) }); n > limit {
			t.Errorf("%s %s: %.2f allocations per request, want at most %.0f", tc.method, tc.uri, n, limit)
		}
	}
}
