package proxy

import (
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/access"
	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/upstream"
)

// BenchmarkHitPathAuth measures a cache hit (a manifest by digest) through
// the handler, with access control off and on: a password client (bcrypt
// ran once, on the first request) and a trusted-network client. The
// difference is what access control adds to every hit.
func BenchmarkHitPathAuth(b *testing.B) {
	up := testupstream.Start(b)
	img := up.PushRandomImage(b, "library/alpine", "latest", 1, 1024)
	path := "/v2/library/alpine/manifests/" + testupstream.Digest(b, img).String()
	// bcrypt of "ci-pw" at the minimum cost (bcrypt stays in package access).
	const hash = "$2a$04$cEx12QGhXRwIMzGS.ux0Ze.dFk0dSCmQLMak.EivCTqjXq3UJcCfW"
	htpasswd := filepath.Join(b.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("ci:"+hash+"\nother:"+hash+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	rules := []access.Rule{
		{Users: []string{"other"}, Allow: []string{"ghcr.io/**"}},
		{Users: []string{"ci", "anonymous"}, Allow: []string{"docker.io/**", "ghcr.io/myorg/**"}, Deny: []string{"docker.io/someuser/**"}},
	}
	cases := []struct {
		name string
		opts *access.Options
		hdr  string
	}{
		{"auth=off", nil, ""},
		{"auth=password", &access.Options{HtpasswdFile: htpasswd, Rules: rules}, "Basic " + base64.StdEncoding.EncodeToString([]byte("ci:ci-pw"))},
		{"auth=trusted-network", &access.Options{HtpasswdFile: htpasswd, TrustedNetworks: []string{"10.0.0.0/8"}, Rules: rules}, ""},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			reg, err := upstream.New(upstream.Options{Name: "docker.io", URL: up.URL()})
			if err != nil {
				b.Fatal(err)
			}
			store, err := cache.Open(cache.Options{Dir: b.TempDir(), Logger: discardLogger()})
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			o := Options{Registries: []Upstream{reg}, Store: store, Logger: discardLogger()}
			if c.opts != nil {
				c.opts.Logger = discardLogger()
				ac, err := access.New(*c.opts)
				if err != nil {
					b.Fatal(err)
				}
				o.Access = ac
			}
			s, err := New(o)
			if err != nil {
				b.Fatal(err)
			}
			h := s.Handler()
			addr := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 40000}
			var req fasthttp.Request
			req.SetRequestURI(path)
			req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
			if c.hdr != "" {
				req.Header.Set("Authorization", c.hdr)
			}
			// The first request fills the cache (and verifies the password
			// once); it checks the answer.
			var ctx fasthttp.RequestCtx
			ctx.Init(&req, addr, nil)
			h(&ctx)
			if ctx.Response.StatusCode() != http.StatusOK {
				b.Fatalf("first request: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var r fasthttp.Request
				req.CopyTo(&r)
				var ctx fasthttp.RequestCtx
				for pb.Next() {
					ctx.Init(&r, addr, nil)
					h(&ctx)
					if ctx.Response.StatusCode() != http.StatusOK {
						b.Errorf("status %d", ctx.Response.StatusCode())
						return
					}
				}
			})
		})
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
