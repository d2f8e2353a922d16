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

// BenchmarkSmallHits runs warm small requests through the handler in one
// goroutine, no network: what one manifest GET by digest and one blob HEAD
// cost the server, with the request log on (text, to io.Discard), and how
// many allocations (-benchmem).
//
//	go test -run '^$' -bench SmallHits -benchmem ./proxy/
func BenchmarkSmallHits(b *testing.B) {
	up := testupstream.Start(b)
	img := up.PushRandomImage(b, "library/small", "latest", 1, 512)
	md := testupstream.Digest(b, img)
	layer := testupstream.LayerDigests(b, img)[0]
	reg, err := upstream.New(upstream.Options{Name: "docker.io", URL: up.URL()})
	if err != nil {
		b.Fatal(err)
	}
	log := logline.New(io.Discard, logline.Text, slog.LevelInfo) // serve's logger
	st, err := cache.Open(cache.Options{Dir: b.TempDir(), Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	s, err := New(Options{Registries: []Upstream{reg}, Store: st, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	do := func(b *testing.B, method, uri string, ctx *fasthttp.RequestCtx) {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod(method)
		ctx.Request.SetRequestURI(uri)
		ctx.Request.Header.SetUserAgent("regmirror-bench")
		h(ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("%s %s: %d %s", method, uri, ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, remote, nil)
	mpath := "/v2/library/small/manifests/" + md.String()
	bpath := "/v2/library/small/blobs/" + layer.String()
	do(b, "GET", mpath, &ctx)
	do(b, "GET", bpath, &ctx)
	if rc := ctx.Response.BodyStream(); rc != nil {
		ctx.Response.Reset() // closes the stream
	}
	for _, tc := range []struct{ name, method, uri string }{
		{"manifest-get", "GET", mpath},
		{"blob-head", "HEAD", bpath},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				do(b, tc.method, tc.uri, &ctx)
			}
		})
	}
}
