package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testclock"
	"github.com/regmirror/regmirror/internal/testlog"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// newReg returns a Registry for up with fast retries; o's other fields are kept.
func newReg(t *testing.T, up *testupstream.Server, o Options) *Registry {
	t.Helper()
	if o.Name == "" {
		o.Name = up.Host()
	}
	o.URL = up.URL()
	if o.RetryBackoff == 0 {
		o.RetryBackoff = time.Millisecond
	}
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func readBlob(t *testing.T, b *Blob) ([]byte, error) {
	t.Helper()
	defer b.Body.Close()
	return io.ReadAll(b.Body)
}

func TestTokenReuse(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/alpine", "3.20", 2, 1000)
	up.PushRandomImage(t, "library/busybox", "1", 1, 100)
	up.Reset()
	r := newReg(t, up, Options{Name: "docker.io"})
	ctx := context.Background()

	layers := testupstream.LayerDigests(t, img)
	for range 3 {
		if _, err := r.HeadManifest(ctx, "alpine", "3.20"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := r.GetManifest(ctx, "library/alpine", "3.20"); err != nil {
			t.Fatal(err)
		}
		b, err := r.GetBlob(ctx, "alpine", layers[0], 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := readBlob(t, b); err != nil {
			t.Fatal(err)
		}
	}
	if n := up.TokenRequests(); n != 1 {
		t.Fatalf("token requests after 9 calls on one repo: %d, want 1", n)
	}
	if n := up.Unauthorized(); n != 1 {
		t.Errorf("401s: %d, want 1 (the ping)", n)
	}
	if _, err := r.HeadManifest(ctx, "busybox", "1"); err != nil {
		t.Fatal(err)
	}
	if n := up.TokenRequests(); n != 2 {
		t.Fatalf("token requests after a second repo: %d, want 2", n)
	}
}

func TestConcurrentCallersShareOneToken(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "a/b", "v1", 1, 100)
	up.Reset()
	r := newReg(t, up, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, _, err := r.GetManifest(context.Background(), "a/b", "v1")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := up.TokenRequests(); n != 1 {
		t.Fatalf("token requests: %d, want 1", n)
	}
	if n := up.Count(http.MethodGet, "/v2/"); n > 0 {
		t.Fatalf("authorized pings: %d", n)
	}
}

func TestCredentials(t *testing.T) {
	up := testupstream.Start(t, testupstream.WithCredentials("alice", "s3cret"))
	img := up.PushRandomImage(t, "private/app", "v1", 1, 100)
	up.Reset()

	r := newReg(t, up, Options{Username: "alice", Password: "s3cret"})
	desc, err := r.HeadManifest(context.Background(), "private/app", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != testupstream.Digest(t, img) {
		t.Fatalf("digest %s", desc.Digest)
	}
	anon := newReg(t, up, Options{})
	if _, err := anon.HeadManifest(context.Background(), "private/app", "v1"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("anonymous: %v, want ErrUnauthorized", err)
	}
	wrong := newReg(t, up, Options{Username: "alice", Password: "nope"})
	if _, err := wrong.HeadManifest(context.Background(), "private/app", "v1"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong password: %v, want ErrUnauthorized", err)
	}
}

func TestBasicAndNoAuth(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []testupstream.Option
		o    Options
	}{
		{"basic", []testupstream.Option{testupstream.WithCredentials("u", "p"), testupstream.WithBasicChallenge()}, Options{Username: "u", Password: "p"}},
		{"none", []testupstream.Option{testupstream.WithNoAuth()}, Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := testupstream.Start(t, tc.opts...)
			img := up.PushRandomImage(t, "x", "v1", 1, 100)
			r := newReg(t, up, tc.o)
			_, desc, err := r.GetManifest(context.Background(), "x", "v1")
			if err != nil {
				t.Fatal(err)
			}
			if desc.Digest != testupstream.Digest(t, img) {
				t.Fatal("digest differs")
			}
		})
	}
	up := testupstream.Start(t, testupstream.WithCredentials("u", "p"), testupstream.WithBasicChallenge())
	up.PushRandomImage(t, "x", "v1", 1, 100)
	r := newReg(t, up, Options{})
	if _, err := r.HeadManifest(context.Background(), "x", "v1"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("basic without credentials: %v", err)
	}
}

// TestTokenRefresh: a token is reused until its expires_in minus the
// refresh margin has passed on the registry's clock (Options.Now), then
// exchanged again; a revoked one costs one 401 and one exchange.
func TestTokenRefresh(t *testing.T) {
	up := testupstream.Start(t, testupstream.WithTokenExpiry(time.Minute))
	up.PushRandomImage(t, "a", "v1", 1, 100)
	up.Reset()
	clock := testclock.New()
	r := newReg(t, up, Options{Now: clock.Now})
	ctx := context.Background()
	if _, err := r.HeadManifest(ctx, "a", "v1"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(53 * time.Second) // the refresh margin is a tenth of the life: 54s
	if _, err := r.HeadManifest(ctx, "a", "v1"); err != nil {
		t.Fatal(err)
	}
	if n := up.TokenRequests(); n != 1 {
		t.Fatalf("token requests before the refresh point: %d, want 1 (reused)", n)
	}
	clock.Advance(time.Second)
	if _, err := r.HeadManifest(ctx, "a", "v1"); err != nil {
		t.Fatal(err)
	}
	if n := up.TokenRequests(); n != 2 {
		t.Fatalf("token requests: %d, want 2 (refreshed on expiry)", n)
	}

	// A token the server no longer honours: one 401, one new token, success.
	up.RevokeTokens()
	up.Reset()
	if _, err := r.HeadManifest(ctx, "a", "v1"); err != nil {
		t.Fatal(err)
	}
	if up.TokenRequests() != 1 || up.Unauthorized() != 1 || up.ManifestRequests(http.MethodHead) != 1 {
		t.Fatalf("after revocation: %d token requests, %d 401s, %d HEADs", up.TokenRequests(), up.Unauthorized(), up.ManifestRequests(http.MethodHead))
	}
}

func TestManifests(t *testing.T) {
	up := testupstream.Start(t)
	plats := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}
	imgs := map[string]struct {
		x  interface{ RawManifest() ([]byte, error) }
		mt types.MediaType
	}{
		"schema2": {up.PushRandomImage(t, "m/schema2", "v1", 1, 100), types.DockerManifestSchema2},
		"oci":     {up.PushRandomOCIImage(t, "m/oci", "v1", 1, 100), types.OCIManifestSchema1},
		"index":   {up.PushRandomIndex(t, "m/index", "v1", plats, 1, 100), types.OCIImageIndex},
		"list":    {up.PushRandomManifestList(t, "m/list", "v1", plats, 1, 100), types.DockerManifestList},
	}
	r := newReg(t, up, Options{})
	ctx := context.Background()
	for n, tc := range imgs {
		t.Run(n, func(t *testing.T) {
			raw := testupstream.RawManifest(t, tc.x)
			want := Descriptor{Digest: digest.FromBytes(raw), MediaType: string(tc.mt), Size: int64(len(raw))}
			for _, ref := range []string{"v1", want.Digest.String()} {
				hd, err := r.HeadManifest(ctx, "m/"+n, ref)
				if err != nil {
					t.Fatal(err)
				}
				if hd != want {
					t.Errorf("HEAD %s: %+v, want %+v", ref, hd, want)
				}
				body, gd, err := r.GetManifest(ctx, "m/"+n, ref)
				if err != nil {
					t.Fatal(err)
				}
				if gd != want || !bytes.Equal(body, raw) {
					t.Errorf("GET %s: %+v, want %+v", ref, gd, want)
				}
			}
		})
	}
	// Every manifest request sent the whole Accept set.
	seen := make(chan string, 100)
	r2 := newReg(t, up, Options{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if strings.Contains(req.URL.Path, "/manifests/") {
			seen <- req.Header.Get("Accept")
		}
		return http.DefaultTransport.RoundTrip(req)
	})})
	if _, err := r2.HeadManifest(ctx, "m/index", "v1"); err != nil {
		t.Fatal(err)
	}
	accept := <-seen
	for _, mt := range []types.MediaType{types.OCIImageIndex, types.OCIManifestSchema1, types.DockerManifestList, types.DockerManifestSchema2} {
		if !strings.Contains(accept, string(mt)) {
			t.Errorf("Accept %q lacks %s", accept, mt)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// tamper returns a transport that rewrites manifest responses: the
// Docker-Content-Digest header is replaced and, with flipBody, the body is
// altered (a space appended: still a valid manifest, another digest).
func tamper(flipBody bool) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil || !strings.Contains(req.URL.Path, "/manifests/") || resp.StatusCode != 200 {
			return resp, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if flipBody {
			b = append(b, ' ')
		}
		resp.Header.Set("Docker-Content-Digest", digest.FromString("lies").String())
		resp.Body = io.NopCloser(bytes.NewReader(b))
		return resp, nil
	})
}

func TestGetManifestDigestFromBody(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "a", "v1", 1, 100)
	want := testupstream.Digest(t, img)
	ctx := context.Background()

	// The header lies; the body is right: the digest is the body's.
	r := newReg(t, up, Options{Transport: tamper(false)})
	if _, d, err := r.GetManifest(ctx, "a", "v1"); err != nil || d.Digest != want {
		t.Fatalf("tag: %v %v, want %s", d.Digest, err, want)
	}
	// The body is altered: by tag we report what we got; by digest it is an error.
	r = newReg(t, up, Options{Transport: tamper(true)})
	body, d, err := r.GetManifest(ctx, "a", "v1")
	if err != nil || d.Digest != digest.FromBytes(body) || d.Digest == want {
		t.Fatalf("altered by tag: %v %v", d.Digest, err)
	}
	if _, _, err := r.GetManifest(ctx, "a", want.String()); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "digest mismatch") {
		t.Fatalf("altered by digest: %v, want a digest mismatch", err)
	}
	// HEAD by digest with a lying header.
	if _, err := r.HeadManifest(ctx, "a", want.String()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("HEAD by digest, lying header: %v", err)
	}
}

func TestBlobs(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "b", "v1", 1, 50_000)
	d := testupstream.LayerDigests(t, img)[0]
	content := testupstream.LayerBytes(t, img, 0)
	size := int64(len(content))
	r := newReg(t, up, Options{})
	ctx := context.Background()

	b, err := r.GetBlob(ctx, "b", d, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b.Offset != 0 || b.Size != size {
		t.Errorf("full: offset %d size %d, want 0 %d", b.Offset, b.Size, size)
	}
	if got, err := readBlob(t, b); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("full: %d bytes, %v", len(got), err)
	}

	b, err = r.GetBlob(ctx, "b", d, 1234)
	if err != nil {
		t.Fatal(err)
	}
	if b.Offset != 1234 || b.Size != size {
		t.Errorf("range: offset %d size %d, want 1234 %d", b.Offset, b.Size, size)
	}
	if got, err := readBlob(t, b); err != nil || !bytes.Equal(got, content[1234:]) {
		t.Fatalf("range: %d bytes, %v", len(got), err)
	}
	if up.BlobGETs(d) != 2 {
		t.Errorf("blob GETs %d", up.BlobGETs(d))
	}

	if n, err := r.HeadBlob(ctx, "b", d); err != nil || n != size {
		t.Fatalf("HeadBlob: %d %v, want %d", n, err, size)
	}
	if _, err := r.HeadBlob(ctx, "b", digest.FromString("nope")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("HeadBlob unknown: %v", err)
	}
	if up.BlobGETs(d) != 2 {
		t.Error("HeadBlob downloaded the blob")
	}
}

func TestNotFound(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "a", "v1", 1, 100)
	r := newReg(t, up, Options{})
	ctx := context.Background()
	if _, err := r.HeadManifest(ctx, "a", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("HEAD unknown tag: %v", err)
	}
	if _, _, err := r.GetManifest(ctx, "a", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GET unknown tag: %v", err)
	}
	if _, _, err := r.GetManifest(ctx, "nobody/here", "v1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GET unknown repo: %v", err)
	}
	if _, err := r.GetBlob(ctx, "a", digest.FromString("x"), 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("GET unknown blob: %v", err)
	}
}

func TestStatusFaults(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "a", "v1", 1, 100)
	r := newReg(t, up, Options{Retries: 2})
	ctx := context.Background()
	if _, err := r.HeadManifest(ctx, "a", "v1"); err != nil { // ping and token first
		t.Fatal(err)
	}

	up.Reset()
	up.SetStatus(http.StatusTooManyRequests, "7")
	_, _, err := r.GetManifest(ctx, "a", "v1")
	var rl *RateLimitError
	if !errors.As(err, &rl) || rl.RetryAfter != 7*time.Second || !errors.Is(err, ErrRateLimited) {
		t.Fatalf("429: %v", err)
	}
	if n := up.ManifestRequests(http.MethodGet); n != 1 {
		t.Errorf("429 was retried: %d requests", n)
	}

	up.Reset()
	up.SetStatus(http.StatusServiceUnavailable, "")
	if _, _, err := r.GetManifest(ctx, "a", "v1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("503: %v", err)
	}
	if n := up.ManifestRequests(http.MethodGet); n != 3 {
		t.Errorf("503: %d requests, want 1 + Retries(2)", n)
	}

	up.Reset()
	up.SetStatus(http.StatusForbidden, "")
	if _, err := r.HeadManifest(ctx, "a", "v1"); !errors.Is(err, ErrDenied) {
		t.Fatalf("403: %v", err)
	}
	if n := up.ManifestRequests(http.MethodHead); n != 1 {
		t.Errorf("403 was retried: %d requests", n)
	}
	up.SetStatus(0, "")

	// Retries: -1 means none.
	r0 := newReg(t, up, Options{Retries: -1})
	up.SetStatus(http.StatusBadGateway, "")
	up.Reset()
	if _, err := r0.HeadManifest(ctx, "a", "v1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("502: %v", err)
	}
	if n := up.ManifestRequests(http.MethodHead); n != 1 {
		t.Errorf("Retries -1: %d HEADs, want 1", n)
	}
}

func TestDown(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "a", "v1", 1, 100)
	up.SetDown(true)
	r := newReg(t, up, Options{})
	ctx := context.Background()
	start := time.Now()
	if _, err := r.HeadManifest(ctx, "a", "v1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("down before the ping: %v", err)
	}
	up.SetDown(false)
	if _, err := r.HeadManifest(ctx, "a", "v1"); err != nil {
		t.Fatalf("up again: %v", err)
	}
	up.SetDown(true)
	up.Reset()
	if _, err := r.GetBlob(ctx, "a", digest.FromString("x"), 0); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("down after the ping: %v", err)
	}
	// 1 + 3 retries; net/http itself retries once a request that fails on
	// a reused keep-alive connection, hence 5 at most.
	if n := up.BlobGETs(digest.FromString("x")); n < 4 || n > 5 {
		t.Errorf("attempts: %d, want 1 + 3 retries", n)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %v", el)
	}
}

// TestStalledBody: every body Read runs under a StallTimeout timer; when
// it fires, the read fails with ErrUnavailable and the request is
// cancelled. The timer is the test's, fired by hand once upstream has
// stopped sending (a gate), so nothing waits on the real clock.
func TestStalledBody(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "a", "v1", 1, 50_000)
	d := testupstream.LayerDigests(t, img)[0]
	g := up.Gate(d).SetHeadBytes(100)
	t.Cleanup(g.Open)
	r := newReg(t, up, Options{StallTimeout: 200 * time.Millisecond})
	timer := &handTimer{}
	r.afterFunc = timer.afterFunc

	b, err := r.GetBlob(context.Background(), "a", d, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Body.Close()
	head := make([]byte, 100)
	if _, err := io.ReadFull(b.Body, head); err != nil {
		t.Fatalf("the 100 bytes upstream sent: %v", err)
	}
	if got := timer.lastArmed(); got != 200*time.Millisecond {
		t.Fatalf("reads armed the stall timer with %v, want StallTimeout", got)
	}
	timer.fire()
	rest, err := io.ReadAll(b.Body)
	if !errors.Is(err, ErrUnavailable) || len(rest) != 0 || !strings.Contains(err.Error(), "no data for 200ms") {
		t.Fatalf("stalled: %d more bytes, %v", len(rest), err)
	}
}

// handTimer is a stallTimer that fires only when the test says so.
type handTimer struct {
	mu    sync.Mutex
	f     func()
	armed time.Duration
}

func (h *handTimer) afterFunc(d time.Duration, f func()) stallTimer {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.f = f
	return h
}

func (h *handTimer) Reset(d time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed = d
	return false
}

func (h *handTimer) Stop() bool { return false }

func (h *handTimer) lastArmed() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.armed
}

func (h *handTimer) fire() {
	h.mu.Lock()
	f := h.f
	h.mu.Unlock()
	f()
}

func TestCutBodyAndResume(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "a", "v1", 1, 50_000)
	d := testupstream.LayerDigests(t, img)[0]
	content := testupstream.LayerBytes(t, img, 0)
	r := newReg(t, up, Options{})
	ctx := context.Background()

	up.CutBlobsAfter(1000)
	b, err := r.GetBlob(ctx, "a", d, 0)
	if err != nil {
		t.Fatal(err)
	}
	head, err := readBlob(t, b)
	if !errors.Is(err, ErrUnavailable) || len(head) != 1000 {
		t.Fatalf("cut: %d bytes, %v", len(head), err)
	}
	up.CutBlobsAfter(-1)
	b, err = r.GetBlob(ctx, "a", d, int64(len(head)))
	if err != nil {
		t.Fatal(err)
	}
	rest, err := readBlob(t, b)
	if err != nil || !bytes.Equal(append(head, rest...), content) {
		t.Fatalf("resumed: %d bytes, %v", len(rest), err)
	}
}

func TestContextCancel(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "a", "v1", 1, 50_000)
	d := testupstream.LayerDigests(t, img)[0]
	g := up.Gate(d)
	t.Cleanup(g.Open)
	r := newReg(t, up, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	b, err := r.GetBlob(ctx, "a", d, 0)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := readBlob(t, b); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: %v", err)
	}
	if _, err := r.HeadManifest(ctx, "a", "v1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled HEAD: %v", err)
	}
}

func TestTooLarge(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "a", "v1", 3, 100)
	r := newReg(t, up, Options{MaxManifestSize: 100})
	if _, _, err := r.GetManifest(context.Background(), "a", "v1"); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("GetManifest: %v", err)
	}
}

func TestListTags(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "a", "v1", 1, 100)
	up.Tag(t, "a", "v2", img)
	up.Tag(t, "a", "v3", img)
	r := newReg(t, up, Options{})
	page, err := r.ListTags(context.Background(), "a", "n=2")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(page.Body)); got != `{"name":"a","tags":["v1","v2"]}` {
		t.Fatalf("tags: %s", got)
	}
	page, err = r.ListTags(context.Background(), "a", "last=v2")
	if err != nil || !strings.Contains(string(page.Body), `["v3"]`) {
		t.Fatalf("tags after v2: %s %v", page.Body, err)
	}
}

// TestNextTagPage: the next page of a tag list is read from upstream's
// Link header (RFC 8288, as registries write it), keeping only its n and
// last: the link's host and path are never used.
func TestNextTagPage(t *testing.T) {
	for _, tc := range []struct {
		links []string
		want  string // url.Values encoded; "" for none
	}{
		{nil, ""},
		{[]string{`</v2/a/tags/list?n=2&last=v2>; rel="next"`}, "last=v2&n=2"},
		{[]string{`<https://other.example/v2/a/tags/list?last=v2&n=2&x=y>; rel=next`}, "last=v2&n=2"},
		{[]string{`</v2/a/tags/list?last=v2>; rel="next"`}, "last=v2"},
		{[]string{`</v2/a/tags/list?n=2&last=v0>; rel="prev", </v2/a/tags/list?n=2&last=v4>; rel="next"`}, "last=v4&n=2"},
		{[]string{`</v2/a/tags/list?n=2&last=v0>; rel="prev"`, `</v2/a/tags/list?n=2&last=v4>; REL="Next"`}, "last=v4&n=2"},
		{[]string{`</v2/a/tags/list?n=2&last=v4>; title="x"; rel="first next"`}, "last=v4&n=2"},
		{[]string{`</v2/a/tags/list?n=2>; rel="next"`}, ""},       // no last: nothing to go on from
		{[]string{`/v2/a/tags/list?n=2&last=v2; rel="next"`}, ""}, // not a link
		{[]string{`</v2/a/tags/list?n=2&last=v2>`}, ""},
		{[]string{`<%zz>; rel="next"`}, ""},
	} {
		got := ""
		if next := nextTagPage(tc.links); next != nil {
			got = next.Encode()
		}
		if got != tc.want {
			t.Errorf("nextTagPage(%q) = %q, want %q", tc.links, got, tc.want)
		}
	}
}

func TestRepository(t *testing.T) {
	hub, _ := New(Options{Name: "docker.io"})
	ghcr, _ := New(Options{Name: "ghcr.io"})
	for _, tc := range []struct {
		r        *Registry
		in, want string
	}{
		{hub, "alpine", "library/alpine"},
		{hub, "library/alpine", "library/alpine"},
		{hub, "bitnami/redis", "bitnami/redis"},
		{ghcr, "alpine", "alpine"},
	} {
		if got := tc.r.Repository(tc.in); got != tc.want {
			t.Errorf("%s Repository(%q) = %q, want %q", tc.r.Name(), tc.in, got, tc.want)
		}
	}
	if hub.reg.RegistryStr() != "registry-1.docker.io" || hub.scheme != "https" {
		t.Errorf("docker.io default URL: %s://%s", hub.scheme, hub.reg.RegistryStr())
	}
}

func TestNewValidates(t *testing.T) {
	for _, o := range []Options{
		{},
		{Name: "x", URL: "ftp://x"},
		{Name: "x", URL: "http://"},
		{Name: "x", URL: "https://x/path"},
		{Name: "x", URL: "https://u:p@x"},
		{Name: "x", URL: "https://x?q=1"},
		{Name: "x", CAFile: "/nonexistent"},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	if _, err := New(Options{Name: "registry.corp:5000", URL: "http://10.0.0.1:5000/"}); err != nil {
		t.Error(err)
	}
}

func TestInvalidArguments(t *testing.T) {
	up := testupstream.Start(t)
	r := newReg(t, up, Options{})
	ctx := context.Background()
	for _, repo := range []string{"", "UPPER", "a//b", "../x", "a/", "a b"} {
		if _, err := r.HeadManifest(ctx, repo, "v1"); !errors.Is(err, ErrInvalidName) {
			t.Errorf("repo %q: %v", repo, err)
		}
	}
	for _, ref := range []string{"", "-x", "a/b", "sha256:xyz", "v1?x"} {
		if _, _, err := r.GetManifest(ctx, "a", ref); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ref %q: %v", ref, err)
		}
	}
	if _, err := r.GetBlob(ctx, "a", "sha256:nothex", 0); !errors.Is(err, ErrInvalidName) {
		t.Errorf("bad digest: %v", err)
	}
	if up.TokenRequests() != 0 || up.Unauthorized() != 0 {
		t.Error("invalid arguments reached the network")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{"-3", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 10-99/100", 10, 100, true},
		{"bytes 10-99/*", 10, -1, true},
		{"bytes 10-99/50", 0, 0, false},
		{"bytes */100", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
	} {
		s, tot, ok := ParseContentRange(tc.in)
		if ok != tc.ok || (ok && (s != tc.start || tot != tc.total)) {
			t.Errorf("ParseContentRange(%q) = %d %d %v", tc.in, s, tot, ok)
		}
	}
}

func TestTokenCacheBounded(t *testing.T) {
	c := newTokenCache(3)
	first := c.get("s0")
	for _, s := range []string{"s1", "s2", "s0", "s3"} { // s0 refreshed, so s1 goes
		c.get(s)
	}
	if c.len() != 3 {
		t.Fatalf("len %d", c.len())
	}
	if c.get("s0") != first {
		t.Error("recently used s0 was evicted")
	}
	if _, ok := c.m["s1"]; ok {
		t.Error("least recently used s1 kept")
	}
}

func TestLogsEvents(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "a", "v1", 1, 100)
	var buf syncBuffer
	r := newReg(t, up, Options{Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if _, err := r.HeadManifest(context.Background(), "a", "v1"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "token fetched") {
		t.Errorf("log: %s", buf.String())
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testlog.Buffer
