package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/upstream"
)

// tickingReader yields n bytes per Read and advances a fake clock by step
// while "waiting" for them.
type tickingReader struct {
	n    int
	step time.Duration
	now  *time.Time
}

func (r *tickingReader) Read(p []byte) (int, error) {
	*r.now = r.now.Add(r.step)
	return copy(p, strings.Repeat("x", r.n)), nil
}

// TestRateGuard: the minimum-throughput guard fails a body that averages
// less than the minimum over a window of waiting, and only then; time spent
// outside Read (the fill's own writes) does not count.
func TestRateGuard(t *testing.T) {
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	buf := make([]byte, 1000)
	read := func(g *rateGuard, reads int, between time.Duration) (int, error) {
		for i := 0; i < reads; i++ {
			now = now.Add(between) // not upstream's time
			if _, err := g.Read(buf); err != nil {
				return i + 1, err
			}
		}
		return reads, nil
	}

	// 100 bytes per 100 ms = 1000 B/s, against a minimum of 2000 over 1 s.
	slow := &rateGuard{r: &tickingReader{n: 100, step: 100 * time.Millisecond, now: &now}, now: clock, min: 2000, window: time.Second}
	n, err := read(slow, 100, time.Hour)
	if !errors.Is(err, errUpstreamTooSlow) || n != 10 {
		t.Fatalf("slow body: failed at read %d with %v; want read 10, too slow", n, err)
	}
	// The same body against a minimum of 500: never.
	ok := &rateGuard{r: &tickingReader{n: 100, step: 100 * time.Millisecond, now: &now}, now: clock, min: 500, window: time.Second}
	if n, err := read(ok, 100, time.Hour); err != nil {
		t.Fatalf("fast enough body failed at read %d: %v", n, err)
	}
}

func TestCheckAnnouncedSize(t *testing.T) {
	s := &Server{}
	some := digest.FromString("some content")
	for _, c := range []struct {
		d    digest.Digest
		size int64
		bad  bool
	}{
		{some, 0, true},
		{some, 12, false},
		{some, -1, false},
		{emptyDigest, 0, false},
		{emptyDigest, -1, false},
		{emptyDigest, 1, true},
	} {
		err := s.checkAnnouncedSize(request{}, c.d, c.size)
		if (err != nil) != c.bad || (c.bad && !errors.Is(err, errUpstreamCorrupt)) {
			t.Errorf("%s of %d bytes: %v", c.d, c.size, err)
		}
	}
	var _ io.Reader = (*rateGuard)(nil)
}

// lyingUpstream announces a size for every blob and holds the body until
// release is closed, so that a test can look at the clients' answers while
// the download is still running.
type lyingUpstream struct {
	Upstream // nil: only the methods below are used
	size     int64
	release  chan struct{}
	gets     int
}

func (u *lyingUpstream) Name() string                  { return "docker.io" }
func (u *lyingUpstream) Repository(name string) string { return name }
func (u *lyingUpstream) HeadBlob(ctx context.Context, repo string, d digest.Digest) (int64, error) {
	return u.size, nil
}

func (u *lyingUpstream) GetBlob(ctx context.Context, repo string, d digest.Digest, offset int64) (*upstream.Blob, error) {
	u.gets++
	return &upstream.Blob{Size: u.size, Body: io.NopCloser(&heldReader{release: u.release, r: strings.NewReader("not what was announced")})}, nil
}

type heldReader struct {
	release chan struct{}
	r       io.Reader
}

func (h *heldReader) Read(p []byte) (int, error) {
	<-h.release
	return h.r.Read(p)
}

// getBlob runs one blob GET (or HEAD) through the handler, in memory.
func getBlob(s *Server, d digest.Digest, method ...string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.SetRequestURI("/v2/library/x/blobs/" + d.String())
	if len(method) > 0 {
		req.Header.SetMethod(method[0])
	}
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, nil)
	s.Handler()(ctx)
	return ctx
}

// TestZeroLengthForNonEmptyDigest (item 6): an upstream announcing 0 bytes
// for a blob that is not the empty one is refused at once with a 502, while
// its body is still on the way: no client is answered a clean empty 200.
// Deterministic: the body is held until the answers are in.
func TestZeroLengthForNonEmptyDigest(t *testing.T) {
	store, err := cache.Open(cache.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	up := &lyingUpstream{size: 0, release: make(chan struct{})}
	s, err := New(Options{Registries: []Upstream{up}, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	defer close(up.release) // before Shutdown waits for the download
	d := digest.FromString("twenty-two bytes, not 0")
	ctx := getBlob(s, d)
	if code := ctx.Response.StatusCode(); code != http.StatusBadGateway {
		t.Fatalf("status %d (Content-Length %d), want 502", code, ctx.Response.Header.ContentLength())
	}
	if !strings.Contains(string(ctx.Response.Body()), `"UNAVAILABLE"`) {
		t.Fatalf("body %q", ctx.Response.Body())
	}
	if ctx := getBlob(s, d, http.MethodHead); ctx.Response.StatusCode() != http.StatusBadGateway {
		t.Fatalf("HEAD: status %d (Content-Length %d), want 502", ctx.Response.StatusCode(), ctx.Response.Header.ContentLength())
	}
}

// TestDescriptorSizes: a size a served manifest gave a descriptor is what
// a fill expects; upstream announcing another is refused.
func TestDescriptorSizes(t *testing.T) {
	s := &Server{}
	rq := request{registry: "docker.io", repo: "library/a"}
	other := request{registry: "docker.io", repo: "someone/else"}
	layer, config := digest.FromString("layer"), digest.FromString("config")
	s.sizes.note(rq.registry, rq.repo, digest.FromString("manifest"), []byte(`{"schemaVersion":2,"config":{"digest":"`+config.String()+`","size":6},`+
		`"layers":[{"digest":"`+layer.String()+`","size":100}]}`))
	if err := s.checkAnnouncedSize(rq, layer, 99); !errors.Is(err, errUpstreamLength) {
		t.Fatalf("99 bytes for a 100-byte descriptor: %v", err)
	}
	if err := s.checkAnnouncedSize(rq, layer, 100); err != nil {
		t.Fatal(err)
	}
	if n := s.expectedSize(rq, config, -1); n != 6 {
		t.Fatalf("expected size of an unannounced config: %d", n)
	}
	// Another repository's manifest says nothing about this one's blobs.
	if err := s.checkAnnouncedSize(other, layer, 99); err != nil {
		t.Fatalf("a descriptor of library/a judged someone/else: %v", err)
	}
	s.sizes.note(rq.registry, rq.repo, digest.FromString("not json"), []byte(`not json`))
}
