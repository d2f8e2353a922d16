package cluster

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/upstream"
)

// fakeUpstream is the node's own source: it serves content for any digest
// and counts GetBlob calls.
type fakeUpstream struct {
	content string
	gets    atomic.Int32
}

func (f *fakeUpstream) Name() string               { return "docker.io" }
func (f *fakeUpstream) Repository(n string) string { return n }
func (f *fakeUpstream) HeadManifest(context.Context, string, string) (upstream.Descriptor, error) {
	return upstream.Descriptor{}, upstream.ErrNotFound
}
func (f *fakeUpstream) GetManifest(context.Context, string, string) ([]byte, upstream.Descriptor, error) {
	return nil, upstream.Descriptor{}, upstream.ErrNotFound
}
func (f *fakeUpstream) HeadBlob(context.Context, string, digest.Digest) (int64, error) {
	return int64(len(f.content)), nil
}
func (f *fakeUpstream) ListTags(context.Context, string, string) (upstream.TagPage, error) {
	return upstream.TagPage{}, nil
}
func (f *fakeUpstream) GetBlob(_ context.Context, _ string, _ digest.Digest, offset int64) (*upstream.Blob, error) {
	f.gets.Add(1)
	return &upstream.Blob{Body: io.NopCloser(strings.NewReader(f.content[offset:])), Offset: offset, Size: int64(len(f.content))}, nil
}

// owner is a fake owner peer: it checks the signature and answers with
// handler.
func newOwner(t *testing.T, secret []byte, handler func(w http.ResponseWriter, r *http.Request)) *httptest.Server {
	check := newSigner(secret, 30*time.Second, time.Now)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := check.verify(r.Method, r.RequestURI, r.Header.Get(Header)); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path == PingPath {
			return
		}
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// ownedBy returns a digest the peer owns in a two-node cluster of self and peer.
func ownedBy(peer, self string) digest.Digest {
	for i := 0; ; i++ {
		d := digest.FromString(strconv.Itoa(i))
		if Owner(d.String(), []string{self, peer}) == peer {
			return d
		}
	}
}

func readAll(t *testing.T, b *upstream.Blob) (string, error) {
	t.Helper()
	defer b.Body.Close()
	got, err := io.ReadAll(b.Body)
	return string(got), err
}

// TestSourceForwardsAndFallsBack: a non-owner streams the owner's answer
// (GET with Range for a resume, signed, ?ns= the registry); when the owner
// answers 5xx, refuses the connection, refuses the signature or cuts the
// body, the node marks it down and uses its own source; a digest a peer
// asked this node for is never forwarded.
func TestSourceForwardsAndFallsBack(t *testing.T) {
	secret := []byte("0123456789abcdef0123")
	const content = "the blob's content, served by the owner"
	var mode atomic.Value
	mode.Store("ok")
	var lastURI, lastRange atomic.Value
	owner := newOwner(t, secret, func(w http.ResponseWriter, r *http.Request) {
		lastURI.Store(r.RequestURI)
		lastRange.Store(r.Header.Get("Range"))
		switch mode.Load() {
		case "500":
			w.WriteHeader(http.StatusInternalServerError)
		case "503 upstream":
			w.Header().Set(UpstreamFailedHeader, "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		case "cut":
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			w.Write([]byte(content[:5]))
			w.(http.Flusher).Flush() // headers and 5 bytes out, then the cut
			panic(http.ErrAbortHandler)
		default:
			if rg := r.Header.Get("Range"); rg != "" {
				off, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
				w.Header().Set("Content-Range", "bytes "+strconv.Itoa(off)+"-"+strconv.Itoa(len(content)-1)+"/"+strconv.Itoa(len(content)))
				w.WriteHeader(http.StatusPartialContent)
				w.Write([]byte(content[off:]))
				return
			}
			w.Write([]byte(content))
		}
	})
	self := "http://127.0.0.1:1"
	n, err := New(Options{Self: self, Peers: []string{owner.URL}, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	own := &fakeUpstream{content: content}
	src := n.Wrap(own)
	d := ownedBy(owner.URL, self)
	ctx := context.Background()
	isUp := func() bool { return n.Stats().Peers[0].Up }

	// Before the owner answered a ping it does not count: own source.
	b, err := src.GetBlob(ctx, "library/x", d, 0)
	if err != nil || own.gets.Load() != 1 {
		t.Fatalf("owner not pinged yet: err %v, own source asked %d times", err, own.gets.Load())
	}
	readAll(t, b)
	n.PingAll(ctx)
	if !isUp() || n.Owner(d) != owner.URL {
		t.Fatal("the owner answered its ping but does not own d")
	}

	b, err = src.GetBlob(ctx, "library/x", d, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t, b); err != nil || got != content || b.Size != int64(len(content)) {
		t.Fatalf("from the owner: %q (size %d), %v", got, b.Size, err)
	}
	if want := "/v2/library/x/blobs/" + d.String() + "?ns=docker.io"; lastURI.Load() != want || own.gets.Load() != 1 {
		t.Fatalf("asked the owner for %v (own source %d times), want %s", lastURI.Load(), own.gets.Load(), want)
	}
	b, err = src.GetBlob(ctx, "library/x", d, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := readAll(t, b); got != content[10:] || b.Offset != 10 || lastRange.Load() != "bytes=10-" {
		t.Fatalf("resume: %q at %d (Range %v)", got, b.Offset, lastRange.Load())
	}

	// A cut body: the read fails as ErrUnavailable (the fill resumes) and
	// the owner is marked down, so the resume goes to the own source.
	mode.Store("cut")
	b, err = src.GetBlob(ctx, "library/x", d, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t, b); !errors.Is(err, upstream.ErrUnavailable) || isUp() {
		t.Fatalf("cut body: %q, err %v, owner up %v, stats %+v", got, err, isUp(), n.Stats())
	}
	before := own.gets.Load()
	if b, err := src.GetBlob(ctx, "library/x", d, 5); err != nil || own.gets.Load() != before+1 || b.Offset != 5 {
		t.Fatalf("resume after the cut: %v, own source %d→%d", err, before, own.gets.Load())
	}

	// A 5xx the owner's upstream caused: this request falls back, and the
	// owner keeps its digests (it is not marked down).
	mode.Store("503 upstream")
	before = own.gets.Load()
	n.PingAll(ctx)
	if b, err := src.GetBlob(ctx, "library/x", d, 0); err != nil || own.gets.Load() != before+1 {
		t.Fatalf("owner's upstream failed: %v, own source not asked", err)
	} else if got, _ := readAll(t, b); got != content || !isUp() {
		t.Fatalf("owner's upstream failed: %q, owner up %v; want it still up", got, isUp())
	}

	// 5xx: falls back at once and marks the owner down.
	mode.Store("500")
	n.PingAll(ctx)
	before = own.gets.Load()
	if b, err := src.GetBlob(ctx, "library/x", d, 0); err != nil || own.gets.Load() != before+1 {
		t.Fatalf("owner 500: %v, own source not asked", err)
	} else if got, _ := readAll(t, b); got != content || isUp() {
		t.Fatalf("owner 500: %q, owner up %v", got, isUp())
	}

	// A peer asked this node for d: it fills d itself, even with the owner up.
	mode.Store("ok")
	n.PingAll(ctx)
	n.Serving(d)
	before = own.gets.Load()
	if _, err := src.GetBlob(ctx, "library/x", d, 0); err != nil || own.gets.Load() != before+1 {
		t.Fatalf("asked by a peer: %v, own source not asked", err)
	}

	// Connection refused: falls back and marks down.
	owner.Close()
	n2, _ := New(Options{Self: self, Peers: []string{owner.URL}, Secret: secret})
	n2.health.up(owner.URL) // as if it had answered before it went away
	src2 := n2.Wrap(own)
	before = own.gets.Load()
	if _, err := src2.GetBlob(ctx, "library/x", d, 0); err != nil || own.gets.Load() != before+1 || n2.Stats().Peers[0].Up {
		t.Fatalf("owner gone: %v, own source asked %d→%d, up %v", err, before, own.gets.Load(), n2.Stats().Peers[0].Up)
	}
	if s := n2.Stats(); s.Fallbacks != 1 || s.Forwarded != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestSourceWrongKeyFallsBack: an owner that refuses our signature (its
// key differs) is not asked again until a ping succeeds.
func TestSourceWrongKeyFallsBack(t *testing.T) {
	owner := newOwner(t, []byte("the owner's own key!!"), func(w http.ResponseWriter, r *http.Request) {
		t.Error("a request with the wrong key was served")
	})
	self := "http://127.0.0.1:1"
	n, _ := New(Options{Self: self, Peers: []string{owner.URL}, Secret: []byte("0123456789abcdef0123")})
	n.PingAll(context.Background())
	if n.Stats().Peers[0].Up {
		t.Fatal("a peer that refuses our signature answered its ping")
	}
	n.health.up(owner.URL)
	own := &fakeUpstream{content: "x"}
	if _, err := n.Wrap(own).GetBlob(context.Background(), "r", ownedBy(owner.URL, self), 0); err != nil || own.gets.Load() != 1 {
		t.Fatalf("%v, own source asked %d times", err, own.gets.Load())
	}
	if n.Stats().Peers[0].Up {
		t.Fatal("a 401 did not mark the owner down")
	}
}

// TestWrapKeepsOptionalMethods: Referrers, Stats and Sources of the inner
// upstream stay visible to the proxy's type assertions.
func TestWrapKeepsOptionalMethods(t *testing.T) {
	n, _ := New(Options{Self: "http://a:1", Peers: []string{"http://b:1"}, Secret: []byte("0123456789abcdef0123")})
	if _, ok := n.Wrap(&fakeUpstream{}).(referrers); ok {
		t.Error("Referrers appeared on an upstream without it")
	}
	reg, err := upstream.New(upstream.Options{Name: "docker.io", URL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	w := n.Wrap(reg)
	if _, ok := w.(referrers); !ok {
		t.Error("Referrers lost")
	}
	if _, ok := w.(stats); !ok {
		t.Error("Stats lost")
	}
	if _, ok := w.(sources); !ok {
		t.Error("Sources lost")
	}
}

// TestServingCutsForward: when a peer asks this node for a digest it is
// itself forwarding (the two views disagree), the forward is cut so that
// the fill resumes from the node's own sources, and the peer it was
// forwarding to is not marked down for it.
func TestServingCutsForward(t *testing.T) {
	secret := []byte("0123456789abcdef0123")
	release := make(chan struct{})
	defer close(release)
	owner := newOwner(t, secret, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("first bytes"))
		w.(http.Flusher).Flush()
		select { // a fill that waits on something (in a loop, on us)
		case <-release:
		case <-r.Context().Done():
		}
	})
	self := "http://127.0.0.1:1"
	n, _ := New(Options{Self: self, Peers: []string{owner.URL}, Secret: secret})
	n.PingAll(context.Background())
	d := ownedBy(owner.URL, self)
	own := &fakeUpstream{content: strings.Repeat("x", 100)}
	b, err := n.Wrap(own).GetBlob(context.Background(), "r", d, 0)
	if err != nil || own.gets.Load() != 0 {
		t.Fatalf("forward: %v, own source asked %d times", err, own.gets.Load())
	}
	defer b.Body.Close()
	buf := make([]byte, 11)
	if _, err := io.ReadFull(b.Body, buf); err != nil {
		t.Fatal(err)
	}
	n.Serving(d)
	_, err = io.ReadAll(b.Body)
	if !errors.Is(err, upstream.ErrUnavailable) || !errors.Is(err, errAskedByPeer) {
		t.Fatalf("the forward in flight: err %v, want it cut as unavailable", err)
	}
	if !n.Stats().Peers[0].Up {
		t.Fatal("the peer was marked down for a cut this node made")
	}
	if _, err := n.Wrap(own).GetBlob(context.Background(), "r", d, 11); err != nil || own.gets.Load() != 1 {
		t.Fatalf("the resume: %v, own source asked %d times, want 1", err, own.gets.Load())
	}
}

// TestFrozenOwnerIsGivenUp: an owner that sends headers and a few bytes,
// then nothing (a frozen process, a partition), does not hold the
// download: once the owner is marked down (a failed ping) the forward is
// cut at once, and without a ping the body's stall timeout cuts it and
// marks the owner down. Either way the read ends with ErrUnavailable, on
// which the fill resumes from the next source.
func TestFrozenOwnerIsGivenUp(t *testing.T) {
	secret := []byte("0123456789abcdef0123")
	const content = "the blob's content, served by the owner"
	for _, how := range []string{"marked down", "stalled"} {
		t.Run(how, func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			frozen := make(chan struct{}, 1)
			owner := newOwner(t, secret, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(len(content)))
				w.Write([]byte(content[:5]))
				w.(http.Flusher).Flush()
				frozen <- struct{}{}
				<-release
			})
			o := Options{Peers: []string{owner.URL}, Secret: secret}
			if how == "stalled" {
				o.StallTimeout = 100 * time.Millisecond
			}
			n, b := forwardedBlob(t, o, content)
			<-frozen
			if how == "marked down" {
				n.markDown(owner.URL, errors.New("ping: timeout"))
			}
			done := make(chan error, 1)
			go func() { _, err := io.ReadAll(b.Body); done <- err }()
			select {
			case err := <-done:
				if !errors.Is(err, upstream.ErrUnavailable) {
					t.Fatalf("read ended with %v, want ErrUnavailable", err)
				}
			case <-time.After(time.Minute):
				t.Fatal("the read of the frozen owner's body did not end")
			}
			b.Body.Close()
			if peers := n.Stats().Peers; len(peers) != 1 || peers[0].Up {
				t.Errorf("peers after the owner froze: %+v, want it down", peers)
			}
			if n.Stats().Fallbacks != 1 {
				t.Errorf("%d fallbacks counted, want 1", n.Stats().Fallbacks)
			}
		})
	}
}

// TestCorruptOwnerCopyIsRefuted: an owner whose copy of a blob is damaged
// sends a whole body that is not the digest; once the fill says so
// (Refuted), this node fetches that digest from its own sources instead
// of getting the same wrong bytes from the owner on every try. The owner
// keeps its other digests.
func TestCorruptOwnerCopyIsRefuted(t *testing.T) {
	secret := []byte("0123456789abcdef0123")
	const content = "the blob's content, served by the owner"
	owner := newOwner(t, secret, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.ToUpper(content))) // damaged
	})
	self := "http://127.0.0.1:1"
	n, err := New(Options{Self: self, Peers: []string{owner.URL}, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n.PingAll(ctx)
	own := &fakeUpstream{content: content}
	src := n.Wrap(own)
	d := ownedBy(owner.URL, self)
	b, err := src.GetBlob(ctx, "library/x", d, 0)
	if err != nil || own.gets.Load() != 0 {
		t.Fatalf("first try: %v, own source asked %d times; want the owner asked", err, own.gets.Load())
	}
	readAll(t, b)
	b.Refuted()
	b, err = src.GetBlob(ctx, "library/x", d, 0)
	if err != nil || own.gets.Load() != 1 {
		t.Fatalf("after the refute: %v, own source asked %d times, want 1", err, own.gets.Load())
	}
	if got, _ := readAll(t, b); got != content {
		t.Fatalf("after the refute: %q", got)
	}
	if !n.Stats().Peers[0].Up || n.forwardTo(digest.FromString("another blob")) == "" && n.Owner(digest.FromString("another blob")) == owner.URL {
		t.Errorf("the refute took the owner out for other digests: %+v", n.Stats().Peers)
	}
}

// TestStallClockRunsOnlyInRead: time the reader spends away from the body
// (a slow disk, a full pass-through window) does not count as the owner
// stalling: an owner that sent everything is not given up on however long
// the reader pauses between reads.
func TestStallClockRunsOnlyInRead(t *testing.T) {
	secret := []byte("0123456789abcdef0123")
	content := strings.Repeat("x", 256<<10)
	owner := newOwner(t, secret, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(content))
	})
	n, b := forwardedBlob(t, Options{Peers: []string{owner.URL}, Secret: secret, StallTimeout: 20 * time.Millisecond}, content)
	defer b.Body.Close()
	buf := make([]byte, 1024)
	if _, err := io.ReadFull(b.Body, buf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the reader away, ten stall timeouts long
	rest, err := io.ReadAll(b.Body)
	if err != nil || len(rest) != len(content)-len(buf) {
		t.Fatalf("after the reader's pause: %d bytes, %v", len(rest), err)
	}
	if !n.Stats().Peers[0].Up {
		t.Errorf("the owner was marked down for the reader's pause: %+v", n.Stats().Peers)
	}
}

// forwardedBlob is a node of o (its Self filled in) whose one peer, the
// owner o.Peers[0], answered its ping, and the blob of a digest that owner
// owns as the node gets it: forwarded, content being the node's own
// source's.
func forwardedBlob(t *testing.T, o Options, content string) (*Node, *upstream.Blob) {
	t.Helper()
	o.Self = "http://127.0.0.1:1"
	n, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	n.PingAll(context.Background())
	b, err := n.Wrap(&fakeUpstream{content: content}).GetBlob(context.Background(), "library/alpine", ownedBy(o.Peers[0], o.Self), 0)
	if err != nil {
		t.Fatal(err)
	}
	return n, b
}

// TestPeerPath: the path a peer is asked names the very repository, also
// one that begins with its registry's name, which the owner would
// otherwise take for a path prefix and drop (and fetch "team" with the
// mirror's credentials for a client of "corp.example/team"). The proxy's
// TestRouterResolve reads the form back.
func TestPeerPath(t *testing.T) {
	for _, c := range []struct{ registry, repo, want string }{
		{"docker.io", "library/alpine", "library/alpine"},
		{"ghcr.io", "org/app", "org/app"},
		{"corp.example", "corp.example/team", "corp.example/corp.example/team"},
		{"docker.io", "index.docker.io/x", "docker.io/index.docker.io/x"}, // an alias of the registry, as the owner reads it
		{"ghcr.io", "docker.io/x", "docker.io/x"},                         // another registry's name is part of the name
	} {
		if got := peerPath(c.registry, c.repo); got != c.want {
			t.Errorf("peerPath(%q, %q) = %q, want %q", c.registry, c.repo, got, c.want)
		}
	}
}
