package proxy

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/cache"
)

// FuzzHandle sends fuzzed requests (method, path with query, Range header)
// through the whole handler of an offline mirror holding one blob and one
// manifest: no input may panic (a recovered panic still counts), every
// answer is a known status, errors are registry JSON, and a 206 promises
// exactly the bytes of its Content-Range, within the blob.
func FuzzHandle(f *testing.F) {
	store, err := cache.Open(cache.Options{Dir: f.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	blob := []byte("0123456789abcdefghij")
	bd := digest.FromBytes(blob)
	if _, err := store.Put(bd, blobContentType, blob); err != nil {
		f.Fatal(err)
	}
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + bd.String() + `","size":20},"layers":[]}`)
	md := digest.FromBytes(manifest)
	if _, err := store.Put(md, "application/vnd.oci.image.manifest.v1+json", manifest); err != nil {
		f.Fatal(err)
	}
	s, err := New(Options{
		Registries: []Upstream{fakeUpstream{}}, Store: store, Offline: true,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][3]string{
		{"GET", "/v2/library/x/blobs/" + bd.String(), "bytes=0-9223372036854775807"},
		{"HEAD", "/v2/library/x/blobs/" + bd.String(), "bytes=1-9223372036854775807"},
		{"GET", "/v2/library/x/blobs/" + bd.String(), "bytes=5-1,3-"},
		{"GET", "/v2/library/x/manifests/" + md.String(), ""},
		{"GET", "/v2/docker.io/library/x/manifests/latest?ns=docker.io", ""},
		{"GET", "/v2/x/tags/list?n=1&last=a", ""},
		{"GET", "/v2/x/referrers/" + md.String() + "?artifactType=a", ""},
		{"PUT", "/v2/x/blobs/uploads/", ""},
		{"GET", "/v2/../../etc/passwd", ""},
		{"GET", "/_regmirror/usage", ""},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	remote := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1234}
	f.Fuzz(func(t *testing.T, method, uri, rangeHeader string) {
		var req fasthttp.Request
		req.Header.SetMethod(method)
		req.SetRequestURI(uri)
		if rangeHeader != "" {
			req.Header.Set("Range", rangeHeader)
		}
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, remote, nil)
		before := counterValue(t, s.guard.panics)
		s.handle(&ctx)
		if counterValue(t, s.guard.panics) != before {
			t.Fatalf("%s %q Range %q: the handler panicked", method, uri, rangeHeader)
		}
		resp := &ctx.Response
		status := resp.StatusCode()
		if http.StatusText(status) == "" {
			t.Fatalf("%s %q Range %q: status %d", method, uri, rangeHeader, status)
		}
		if status == http.StatusPartialContent {
			cr := string(resp.Header.Peek("Content-Range"))
			var start, end, size int64
			if _, err := fmt.Sscanf(cr, "bytes %d-%d/%d", &start, &end, &size); err != nil || start < 0 || end < start || end >= size || size != int64(len(blob)) {
				t.Fatalf("%s %q Range %q: Content-Range %q", method, uri, rangeHeader, cr)
			}
			if n := resp.Header.ContentLength(); int64(n) != end-start+1 {
				t.Fatalf("%s %q Range %q: Content-Length %d for %q", method, uri, rangeHeader, n, cr)
			}
		}
		if resp.IsBodyStream() {
			body, _ := io.ReadAll(resp.BodyStream())
			if !ctx.IsHead() && int64(len(body)) != int64(resp.Header.ContentLength()) {
				t.Fatalf("%s %q Range %q: %d body bytes, Content-Length %d", method, uri, rangeHeader, len(body), resp.Header.ContentLength())
			}
		}
		resp.Reset() // closes a body stream: its file descriptor
	})
}
