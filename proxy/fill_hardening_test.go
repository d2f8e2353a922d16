package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/upstream"
)

// Issue 8, items 6 and 9: fills against a hostile or merely unlucky
// upstream (moved from package main: they prove proxy behaviour only).

func blobURL(m *testMirror, repo string, d digest.Digest) string {
	return m.url + "/v2/" + repo + "/blobs/" + d.String()
}

// cached reports whether the mirror holds d.
func cached(t *testing.T, m *testMirror, d digest.Digest) bool {
	_, err := m.store.Stat(d)
	return err == nil
}

// registryError decodes a registry JSON error body; it fails the test on
// anything else.
func registryError(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
		t.Fatalf("not a registry error body: %q", body)
	}
	return e.Errors[0].Code
}

// TestLyingContentLength (item 6): an upstream announcing Content-Length 0
// for a non-empty blob gives every client a 502 registry error, never a
// clean empty 200 or a 500, and caches nothing; the empty blob itself,
// whose length is 0, still works.
func TestLyingContentLength(t *testing.T) {
	up := testupstream.Start(t)
	_, d := up.PushLargeBlobImage(t, "library/liar", "latest", 300<<10)
	_, empty := up.PushLargeBlobImage(t, "library/empty", "latest", 0)
	if empty != digest.FromBytes(nil) {
		t.Fatalf("empty layer digest %s", empty)
	}
	m := startMirror(t, up)
	up.LieBlobLength(0)

	const clients = 8
	type answer struct {
		status int
		body   []byte
		err    error
	}
	answers := make([]answer, clients)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(blobURL(m, "library/liar", d))
			if err != nil {
				answers[i].err = err
				return
			}
			defer resp.Body.Close()
			answers[i].status = resp.StatusCode
			answers[i].body, answers[i].err = io.ReadAll(resp.Body)
		}()
	}
	wg.Wait()
	for i, a := range answers {
		if a.err != nil {
			t.Fatalf("client %d: %v", i, a.err)
		}
		if a.status != http.StatusBadGateway {
			t.Fatalf("client %d: status %d, %d bytes (%q); want 502", i, a.status, len(a.body), a.body)
		}
		if code := registryError(t, a.body); code != "UNAVAILABLE" {
			t.Fatalf("client %d: code %s", i, code)
		}
	}
	if cached(t, m, d) {
		t.Fatal("a blob with a lying length was cached")
	}

	// The empty blob announces 0 and is 0: served and cached.
	resp, body := send(t, http.MethodGet, blobURL(m, "library/empty", empty))
	if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.Header.Get("Docker-Content-Digest") != empty.String() {
		t.Fatalf("empty blob: status %d, %d bytes, digest header %q", resp.StatusCode, len(body), resp.Header.Get("Docker-Content-Digest"))
	}
	eventually(t, "the empty blob to be cached", func() bool { return cached(t, m, empty) })

	// A length of 0 for the empty blob is the truth; any other is a lie too.
	up.LieBlobLength(-1)
	resp, body = send(t, http.MethodGet, blobURL(m, "library/liar", d))
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != d {
		t.Fatalf("honest again: status %d, %d bytes", resp.StatusCode, len(body))
	}
}

// TestLyingLengthsNeverCompleteAWrongBody (item 6): lengths shorter or
// longer than the blob end every client's body short (or answer 502): no
// client receives a complete body that is not the blob.
func TestLyingLengthsNeverCompleteAWrongBody(t *testing.T) {
	up := testupstream.Start(t)
	const size = 200 << 10
	_, d := up.PushLargeBlobImage(t, "library/liar", "latest", size)
	m := startMirror(t, up)
	for _, lie := range []int64{size - 1000, size + 1000, 1} {
		up.LieBlobLength(lie)
		for i := 0; i < 3; i++ {
			resp, err := http.Get(blobURL(m, "library/liar", d))
			if err != nil {
				t.Fatal(err)
			}
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case resp.StatusCode >= 500 && resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable:
				t.Fatalf("lie %d: status %d %q", lie, resp.StatusCode, body)
			case resp.StatusCode == http.StatusOK && rerr == nil:
				t.Fatalf("lie %d: a complete 200 of %d bytes (digest %s)", lie, len(body), digest.FromBytes(body))
			}
		}
		if cached(t, m, d) {
			t.Fatalf("lie %d: cached", lie)
		}
	}
}

// TestLyingLengthAgainstDescriptor (item 6): once a client has pulled the
// manifest, an upstream announcing another length for one of its layers is
// answered 502 to every client at once, not streamed and cut.
func TestLyingLengthAgainstDescriptor(t *testing.T) {
	up := testupstream.Start(t)
	const size = 200 << 10
	img, d := up.PushLargeBlobImage(t, "library/liar", "latest", size)
	m := startMirror(t, up)
	resp, _ := send(t, http.MethodGet, m.url+"/v2/library/liar/manifests/"+testupstream.Digest(t, img).String(),
		"Accept", "application/vnd.docker.distribution.manifest.v2+json")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("manifest: %d", resp.StatusCode)
	}
	up.LieBlobLength(size - 1000)
	for i := 0; i < 3; i++ {
		resp, body := send(t, http.MethodGet, blobURL(m, "library/liar", d))
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d, %d bytes; want 502", resp.StatusCode, len(body))
		}
		if code := registryError(t, body); code != "UNAVAILABLE" {
			t.Fatalf("code %s", code)
		}
	}
	up.LieBlobLength(-1)
	resp, body := send(t, http.MethodGet, blobURL(m, "library/liar", d))
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != d {
		t.Fatalf("honest again: status %d, %d bytes", resp.StatusCode, len(body))
	}
}

// TestDescriptorLengthOfAnotherRepo: a fill started for a repository whose
// manifest gave a layer another size than upstream announces fails its
// own clients (502, as above), but a client of another repository that
// joined it gets a fill of its own and the blob: that manifest says
// nothing about the layer there.
func TestDescriptorLengthOfAnotherRepo(t *testing.T) {
	up := testupstream.Start(t)
	const size = 200 << 10
	img, d := up.PushLargeBlobImage(t, "library/good", "latest", size)
	up.Push(t, "library/bad", "latest", img)
	m := startMirror(t, up)
	m.sizes.note("docker.io", "library/bad", digest.FromString("a manifest of library/bad"),
		[]byte(`{"schemaVersion":2,"layers":[{"digest":"`+d.String()+`","size":`+strconv.Itoa(size+5)+`}]}`))
	bad, good := joinedFailingFill(t, m, up.Gate(d).HoldHeaders(), blobURL(m, "library/bad", d), blobURL(m, "library/good", d))
	if bad.status != http.StatusBadGateway {
		t.Errorf("the repository whose descriptor disagrees: status %d, want 502", bad.status)
	}
	if good.status != http.StatusOK || good.got != d {
		t.Errorf("the other repository's client: status %d, body %s; want 200 and the blob", good.status, good.got)
	}
	if n := up.BlobGETs(d); n != 2 {
		t.Errorf("%d upstream GETs, want 2: the refused one and the other repository's own", n)
	}
}

// TestJoinedFillOfAnotherRegistryFails: a fill of a digest started through
// another registry (anyone may ask any configured registry for any digest)
// that fails there, before an answer, does not fail the clients of a
// registry that has the blob and joined it: each gets a fill of its own.
// Before, one client asking a registry that lacks a layer, or lies about
// it, could fail that layer for everyone.
func TestJoinedFillOfAnotherRegistryFails(t *testing.T) {
	r := startRegistries(t)
	img, d := r.hub.PushLargeBlobImage(t, "library/app", "v1", 64<<10)
	r.ghcr.Push(t, "someone/else", "v1", img)
	r.ghcr.LieBlobLength(0) // 0 bytes announced for a non-empty blob: refused before any answer
	other, hub := joinedFailingFill(t, r.m, r.ghcr.Gate(d).HoldHeaders(),
		blobURL(r.m, "someone/else", d)+"?ns="+ghcrName, blobURL(r.m, "library/app", d))
	if other.status != http.StatusBadGateway {
		t.Errorf("the ghcr.io client: status %d, want 502", other.status)
	}
	if hub.status != http.StatusOK || hub.got != d {
		t.Errorf("the docker.io client: status %d, body %s; want 200 and the blob", hub.status, hub.got)
	}
	if n := r.hub.BlobGETs(d); n != 1 {
		t.Errorf("%d docker.io GETs, want 1", n)
	}
}

// blobAnswer is a blob GET's status and the digest of its body.
type blobAnswer struct {
	status int
	got    digest.Digest
}

// joinedFailingFill GETs first, which starts a fill whose upstream GET
// gate holds, then second, which joins it; once second has joined it
// opens gate and returns both answers.
func joinedFailingFill(t *testing.T, m *testMirror, gate *testupstream.Gate, first, second string) (a, b blobAnswer) {
	t.Helper()
	get := func(url string, into chan<- blobAnswer) {
		resp, err := http.Get(url)
		if err != nil {
			into <- blobAnswer{}
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		into <- blobAnswer{resp.StatusCode, digest.FromBytes(body)}
	}
	ca, cb := make(chan blobAnswer, 1), make(chan blobAnswer, 1)
	go get(first, ca)
	<-gate.Arrived()
	go get(second, cb)
	eventually(t, "the second client to join the fill", func() bool {
		m.fills.mu.Lock()
		defer m.fills.mu.Unlock()
		for _, f := range m.fills.fills {
			f.mu.Lock()
			n := f.waiting
			f.mu.Unlock()
			if n == 2 {
				return true
			}
		}
		return false
	})
	gate.Open()
	return <-ca, <-cb
}

// TestSlowUpstreamResumedThenGivenUp (item 9): a body trickling below
// server.min_upstream_rate is dropped once the window is spent and resumed
// with a Range request; a resumed body at full speed completes the fill,
// and an upstream that trickles every time is given up after the resume
// limit, with an error to the client and nothing cached.
func TestSlowUpstreamResumedThenGivenUp(t *testing.T) {
	up := testupstream.Start(t)
	const size = 256 << 10
	_, once := up.PushLargeBlobImage(t, "library/once", "latest", size)
	_, always := up.PushLargeBlobImage(t, "library/always", "latest", size)
	m := startMirror(t, up, func(c *mirrorSetup) {
		c.MinUpstreamRate = 64 << 10                     // the trickle below is 50 KiB/s
		c.MinUpstreamRateWindow = 150 * time.Millisecond // small, so the test takes a second
	})

	up.TrickleBlobs(512, 10*time.Millisecond, 1) // the first response only
	resp, body := send(t, http.MethodGet, blobURL(m, "library/once", once))
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != once {
		t.Fatalf("status %d, %d bytes, digest %s", resp.StatusCode, len(body), digest.FromBytes(body))
	}
	if n := up.BlobGETs(once); n != 2 {
		t.Fatalf("%d upstream GETs; want the slow one and its resumption", n)
	}
	eventually(t, "the resumed fill to be cached", func() bool { return cached(t, m, once) })

	up.TrickleBlobs(512, 10*time.Millisecond, 0) // every response
	start := time.Now()
	resp, err := http.Get(blobURL(m, "library/always", always))
	if err != nil {
		t.Fatal(err)
	}
	body, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK && rerr == nil {
		t.Fatalf("a trickling upstream gave a complete body of %d bytes", len(body))
	}
	if n := up.BlobGETs(always); n != 4 {
		t.Fatalf("%d upstream GETs; want 1 + 3 resumptions", n)
	}
	if cached(t, m, always) {
		t.Fatal("cached")
	}
	t.Logf("given up after %v", time.Since(start).Round(time.Millisecond))
}

// TestHeadersBeforeSlowBody (item 9): the status line and headers reach the
// client as soon as upstream has said the size, not once a write buffer's
// worth of a slow body has arrived.
func TestHeadersBeforeSlowBody(t *testing.T) {
	up := testupstream.Start(t)
	_, d := up.PushLargeBlobImage(t, "library/slow", "latest", 100<<10)
	gate := up.Gate(d).SetHeadBytes(10) // headers and 10 bytes, then nothing
	m := startMirror(t, up)
	got := make(chan *http.Response, 1)
	errc := make(chan error, 1)
	go func() {
		resp, err := http.Get(blobURL(m, "library/slow", d))
		if err != nil {
			errc <- err
			return
		}
		got <- resp
	}()
	var resp *http.Response
	select {
	case resp = <-got:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(15 * time.Second): // only reached when the headers are stuck
		gate.Open()
		t.Fatal("no status line while upstream holds the body")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != 100<<10 {
		t.Fatalf("status %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	gate.Open()
	body, err := io.ReadAll(resp.Body)
	if err != nil || digest.FromBytes(body) != d {
		t.Fatalf("%d bytes, %v", len(body), err)
	}
}

// TestFillRefutesOnlyAWholeBody: a fill that got every byte from one body
// read from offset 0 tells that body's source when the digest does not
// match (blob.Refute: a mirror is then asked last, a corrupt S3 object
// deleted); a fill that resumed across bodies names no source, since the
// wrong bytes may have come from either. Either way nothing is cached.
func TestFillRefutesOnlyAWholeBody(t *testing.T) {
	const size = 256 << 10
	up := testupstream.Start(t)
	_, d := up.PushLargeBlobImage(t, "library/big", "latest", size)
	reg, err := upstream.New(upstream.Options{Name: "docker.io", URL: up.URL()})
	if err != nil {
		t.Fatal(err)
	}
	counting := &refuteCounting{Upstream: reg}
	m := startMirror(t, nil, func(st *mirrorSetup) { st.Registries = []Upstream{counting} })
	up.CorruptBlobs(true)
	pull := func(what string) {
		t.Helper()
		resp, err := http.Get(blobURL(m, "library/big", d))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && len(body) == size {
			t.Fatalf("%s: the client received the whole corrupt body", what)
		}
		eventually(t, what+": the fill to end", func() bool { return m.fills.get(d) == nil })
		if cached(t, m, d) {
			t.Fatalf("%s: corrupt content was cached", what)
		}
	}

	pull("whole body")
	if n := counting.refuted.Load(); n != 1 {
		t.Fatalf("whole corrupt body refuted %d times, want once", n)
	}
	up.CutBlobsAfter(size / 2) // every body is cut halfway: the fill resumes once
	pull("resumed body")
	if n := counting.refuted.Load(); n != 1 {
		t.Fatalf("after a resumed download: refuted %d times in all, want still once", n)
	}
}
