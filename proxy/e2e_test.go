package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/internal/testpull"
	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/upstream"
)

func TestPullImagesThroughMirror(t *testing.T) {
	up := testupstream.Start(t)
	schema2 := up.PushRandomImage(t, "library/alpine", "latest", 3, 4096)
	oci := up.PushRandomOCIImage(t, "org/oci-app", "v1", 2, 4096)
	index := up.PushRandomIndex(t, "library/multi", "latest",
		[]v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}, 2, 2048)
	m := startMirror(t, up)

	cases := []struct {
		ref  string
		want digest.Digest
	}{
		{"alpine:latest", testupstream.Digest(t, schema2)}, // Docker Hub defaulting: alpine → library/alpine
		{"library/alpine:latest", testupstream.Digest(t, schema2)},
		{"org/oci-app:v1", testupstream.Digest(t, oci)},
		{"library/multi:latest", testupstream.Digest(t, index)},
		{"library/multi@" + testupstream.Digest(t, index).String(), testupstream.Digest(t, index)},
	}
	for _, c := range cases {
		if got := pullAll(t, m, c.ref); got != c.want {
			t.Errorf("pull %s: digest %s, want %s", c.ref, got, c.want)
		}
	}
	blobGETs := totalBlobGETs(t, up, m)
	manifestGETs := up.ManifestRequests(http.MethodGet)
	// A second round is served from the cache: no upstream blob or manifest
	// fetch (tags are younger than the TTL).
	for _, c := range cases {
		pullAll(t, m, c.ref)
	}
	if got := totalBlobGETs(t, up, m); got != blobGETs {
		t.Errorf("second pull fetched blobs upstream: %d GETs, before %d", got, blobGETs)
	}
	if got := up.ManifestRequests(http.MethodGet); got != manifestGETs {
		t.Errorf("second pull fetched manifests upstream: %d GETs, before %d", got, manifestGETs)
	}
	if n := verifyBlobFiles(t, m.dataDir); n == 0 {
		t.Fatal("nothing cached")
	}
}

func TestManifestHeaders(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/alpine", "3.20", 1, 1024)
	m := startMirror(t, up)
	want := testupstream.Digest(t, img)
	raw := testupstream.RawManifest(t, img)
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		for _, ref := range []string{"3.20", want.String()} {
			resp, body := send(t, method, m.url+"/v2/library/alpine/manifests/"+ref,
				"Accept", "application/vnd.docker.distribution.manifest.v2+json")
			if resp.StatusCode != 200 {
				t.Fatalf("%s %s: status %d: %s", method, ref, resp.StatusCode, body)
			}
			if got := resp.Header.Get("Docker-Content-Digest"); got != want.String() {
				t.Errorf("%s %s: Docker-Content-Digest %q", method, ref, got)
			}
			if got := resp.Header.Get("Content-Type"); got != "application/vnd.docker.distribution.manifest.v2+json" {
				t.Errorf("%s %s: Content-Type %q", method, ref, got)
			}
			if got := resp.Header.Get("Content-Length"); got != fmt.Sprint(len(raw)) {
				t.Errorf("%s %s: Content-Length %q, want %d", method, ref, got, len(raw))
			}
			if got := resp.Header.Get("ETag"); got != `"`+want.String()+`"` {
				t.Errorf("%s %s: ETag %q", method, ref, got)
			}
			if method == http.MethodGet && !bytes.Equal(body, raw) {
				t.Errorf("%s %s: body differs from the upstream manifest", method, ref)
			}
		}
	}
	resp, _ := send(t, http.MethodGet, m.url+"/v2/")
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Errorf("/v2/: %d %v", resp.StatusCode, resp.Header)
	}
}

// wantWireError checks that body is one registry error with code.
func wantWireError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	wantJSONError(t, resp.Request.Method+" "+resp.Request.URL.String(), resp, body, status, code)
}

func TestErrors(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/alpine", "latest", 1, 512)
	m := startMirror(t, up)
	zero := "sha256:" + strings.Repeat("0", 64)
	cases := []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v2/library/alpine/manifests/nope", 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/library/alpine/manifests/" + zero, 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/library/alpine/blobs/" + zero, 404, "BLOB_UNKNOWN"},
		{"HEAD", "/v2/library/alpine/blobs/" + zero, 404, "BLOB_UNKNOWN"},
		{"GET", "/v2/Library/Alpine/manifests/latest", 400, "NAME_INVALID"},
		{"GET", "/v2/library/alpine/blobs/sha256:xyz", 400, "DIGEST_INVALID"},
		{"GET", "/v2/library/alpine/blobs/md5:abc", 400, "DIGEST_INVALID"},
		{"GET", "/v2/library/alpine/manifests/-bad", 400, "MANIFEST_INVALID"},
		{"PUT", "/v2/library/alpine/manifests/latest", 405, "UNSUPPORTED"},
		{"DELETE", "/v2/library/alpine/blobs/" + zero, 405, "UNSUPPORTED"},
		{"POST", "/v2/library/alpine/blobs/uploads/", 405, "UNSUPPORTED"},
		{"PATCH", "/v2/library/alpine/blobs/uploads/abc", 405, "UNSUPPORTED"},
		{"GET", "/v2/evil.example.com/x/manifests/latest", 403, "DENIED"},
		{"GET", "/v2/library/alpine/manifests/latest?ns=evil.example.com", 403, "DENIED"},
		{"GET", "/v2/nothing-here", 404, "UNSUPPORTED"},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			resp, body := send(t, c.method, m.url+c.path)
			if c.method == "HEAD" {
				if resp.StatusCode != c.status {
					t.Errorf("status %d, want %d", resp.StatusCode, c.status)
				}
				return
			}
			wantWireError(t, resp, body, c.status, c.code)
		})
	}
}

// TestLayerAskedForAsManifest: a cached layer larger than a manifest may
// be, asked for as a manifest, is answered as upstream answers it (404
// MANIFEST_UNKNOWN), as before it was cached: not a 500 that would tell
// what the cache holds.
func TestLayerAskedForAsManifest(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/alpine", "latest", 1, 8<<10)
	m := startMirror(t, up, func(st *mirrorSetup) { st.MaxManifestSize = 4 << 10 })
	layer := testupstream.LayerDigests(t, img)[0]
	asManifest := m.url + "/v2/library/alpine/manifests/" + layer.String()
	for _, when := range []string{"not cached", "cached"} {
		resp, body := send(t, http.MethodGet, asManifest)
		wantJSONError(t, when+": GET "+asManifest, resp, body, http.StatusNotFound, "MANIFEST_UNKNOWN")
		resp, body = send(t, http.MethodGet, m.url+"/v2/library/alpine/blobs/"+layer.String())
		wantContent(t, "the layer", resp, body, layer)
	}
}

func TestRateLimitPassedOn(t *testing.T) {
	up := testupstream.Start(t)
	m := startMirror(t, up)
	up.SetStatus(http.StatusTooManyRequests, "42")
	resp, body := send(t, "GET", m.url+"/v2/library/alpine/manifests/latest")
	wantWireError(t, resp, body, 429, "TOOMANYREQUESTS")
	if got := resp.Header.Get("Retry-After"); got != "42" {
		t.Errorf("Retry-After %q, want 42", got)
	}
}

func TestBlobRangeAndHead(t *testing.T) {
	up := testupstream.Start(t)
	img, big := up.PushLargeBlobImage(t, "library/big", "latest", 3<<20)
	_ = img
	m := startMirror(t, up)
	blobURL := m.url + "/v2/library/big/blobs/" + big.String()
	want, _ := io.ReadAll(testupstream.LargeBlobReader("library/big:latest", 3<<20))
	if digest.FromBytes(want) != big {
		t.Fatal("LargeBlobReader does not reproduce the pushed layer")
	}

	// HEAD on a missing blob answers from upstream without downloading it.
	resp, _ := send(t, http.MethodHead, blobURL)
	if resp.StatusCode != 200 || resp.ContentLength != 3<<20 || resp.Header.Get("Docker-Content-Digest") != big.String() {
		t.Fatalf("HEAD: %d len %d %v", resp.StatusCode, resp.ContentLength, resp.Header)
	}
	if n := up.BlobGETs(big); n != 0 {
		t.Fatalf("HEAD downloaded the blob: %d GETs", n)
	}

	// A Range request on a missing blob is served from the fill.
	resp, body := send(t, http.MethodGet, blobURL, "Range", "bytes=1048576-1048675")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want[1<<20:1<<20+100]) {
		t.Fatalf("range on a miss: %d, %d bytes", resp.StatusCode, len(body))
	}
	if got := resp.Header.Get("Content-Range"); got != fmt.Sprintf("bytes 1048576-1048675/%d", 3<<20) {
		t.Errorf("Content-Range %q", got)
	}
	eventually(t, "the fill to commit", func() bool { return blobFiles(t, m.dataDir)[big.Encoded()] })

	// Ranges on a hit.
	for _, c := range []struct {
		header string
		from   int
		to     int
	}{{"bytes=0-0", 0, 1}, {"bytes=100-", 100, 3 << 20}, {"bytes=-10", 3<<20 - 10, 3 << 20}} {
		resp, body := send(t, http.MethodGet, blobURL, "Range", c.header)
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want[c.from:c.to]) {
			t.Errorf("%s: status %d, %d bytes", c.header, resp.StatusCode, len(body))
		}
	}
	resp, _ = send(t, http.MethodGet, blobURL, "Range", fmt.Sprintf("bytes=%d-", 3<<20))
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("unsatisfiable range: status %d", resp.StatusCode)
	}
	if n := up.BlobGETs(big); n != 1 {
		t.Errorf("upstream blob GETs = %d, want 1", n)
	}
}

// TestConcurrentColdBlob: 20 clients ask for one cold 64 MiB blob at once.
// A gate holds the upstream body after its first MiB until every client has
// received bytes, which proves that all 20 joined the one fill and that they
// stream while the download runs.
func TestConcurrentColdBlob(t *testing.T) {
	const size = 64 << 20
	const clients = 20
	up := testupstream.Start(t)
	_, big := up.PushLargeBlobImage(t, "library/big", "latest", size)
	gate := up.Gate(big).SetHeadBytes(1 << 20)
	m := startMirror(t, up)

	var firstBytes sync.WaitGroup
	firstBytes.Add(clients)
	results := make(chan error, clients)
	for i := 0; i < clients; i++ {
		go func() {
			resp, err := http.Get(m.url + "/v2/library/big/blobs/" + big.String())
			if err != nil {
				firstBytes.Done()
				results <- err
				return
			}
			defer resp.Body.Close()
			h := sha256.New()
			var one [1]byte
			_, err = io.ReadFull(resp.Body, one[:])
			firstBytes.Done()
			if err != nil {
				results <- err
				return
			}
			h.Write(one[:])
			n, err := io.Copy(h, resp.Body)
			if err != nil {
				results <- err
				return
			}
			if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != big.String() || n+1 != size {
				results <- fmt.Errorf("got %d bytes with digest %s", n+1, got)
				return
			}
			results <- nil
		}()
	}
	firstBytes.Wait() // every client is streaming; upstream is still held
	if n := gate.Requests(); n != 1 {
		t.Fatalf("upstream saw %d blob GETs while clients waited, want 1", n)
	}
	gate.Open()
	for i := 0; i < clients; i++ {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
	if n := up.BlobGETs(big); n != 1 {
		t.Errorf("upstream blob GETs = %d, want exactly 1", n)
	}
	eventually(t, "the fill to commit", func() bool { return blobFiles(t, m.dataDir)[big.Encoded()] })
	verifyBlobFiles(t, m.dataDir)
}

// TestClientDisconnectDoesNotCancelFill: the first client leaves mid-blob;
// the one still waiting gets every byte from the same single download.
func TestClientDisconnectDoesNotCancelFill(t *testing.T) {
	const size = 8 << 20
	up := testupstream.Start(t)
	_, big := up.PushLargeBlobImage(t, "library/big", "latest", size)
	gate := up.Gate(big).SetHeadBytes(1 << 20)
	m := startMirror(t, up)
	url := m.url + "/v2/library/big/blobs/" + big.String()

	quitter, _ := startDownload(t, url, 1000)
	stayer, _ := startDownload(t, url, 1)
	defer stayer.Body.Close()
	quitter.Body.Close() // goes away mid-download
	gate.Open()
	rest, err := io.ReadAll(stayer.Body)
	if err != nil {
		t.Fatalf("the remaining client's download broke: %v", err)
	}
	if len(rest)+1 != size {
		t.Fatalf("remaining client got %d bytes, want %d", len(rest)+1, size)
	}
	if n := up.BlobGETs(big); n != 1 {
		t.Errorf("upstream blob GETs = %d, want 1", n)
	}
	eventually(t, "the fill to commit", func() bool { return blobFiles(t, m.dataDir)[big.Encoded()] })
}

// TestCutUpstreamResumes: upstream cuts every body after 1 MiB; the fill
// resumes with Range requests and the client gets the right bytes.
func TestCutUpstreamResumes(t *testing.T) {
	const size = 3<<20 + 123
	up := testupstream.Start(t)
	_, big := up.PushLargeBlobImage(t, "library/big", "latest", size)
	m := startMirror(t, up)
	up.CutBlobsAfter(1 << 20)
	resp, body := send(t, http.MethodGet, m.url+"/v2/library/big/blobs/"+big.String())
	if resp.StatusCode != 200 || digest.FromBytes(body) != big {
		t.Fatalf("status %d, %d bytes, digest %s", resp.StatusCode, len(body), digest.FromBytes(body))
	}
	if n := up.BlobGETs(big); n != 4 {
		t.Errorf("upstream blob GETs = %d, want 4 (one, then three resumes)", n)
	}
}

// TestCutUpstreamFails: upstream cuts the body and then stays down. The
// client's response is cut short, nothing is cached, and the next pull,
// with upstream back, is correct.
func TestCutUpstreamFails(t *testing.T) {
	const size = 4 << 20
	up := testupstream.Start(t)
	_, big := up.PushLargeBlobImage(t, "library/big", "latest", size)
	gate := up.Gate(big).SetHeadBytes(1 << 20)
	m := startMirror(t, up)
	url := m.url + "/v2/library/big/blobs/" + big.String()

	up.CutBlobsAfter(2 << 20)
	resp, _ := startDownload(t, url, 1)
	up.SetDown(true) // the resumes fail
	gate.Open()      // the body goes on to 2 MiB, then is cut
	_, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatal("the client received a complete body from a failed download")
	}
	eventually(t, "the failed fill to clean up", func() bool { return len(tmpFiles(t, m.dataDir)) == 0 })
	if blobFiles(t, m.dataDir)[big.Encoded()] {
		t.Fatal("a cut download was cached")
	}
	up.ClearFaults()
	resp2, body := send(t, http.MethodGet, url)
	if resp2.StatusCode != 200 || digest.FromBytes(body) != big {
		t.Fatalf("pull after recovery: %d, digest %s", resp2.StatusCode, digest.FromBytes(body))
	}
}

// TestCorruptUpstreamNeverServedWhole: upstream flips a byte. The client's
// body is cut before its last byte, nothing is cached, and a later pull from
// a healthy upstream is correct.
func TestCorruptUpstreamNeverServedWhole(t *testing.T) {
	const size = 2 << 20
	up := testupstream.Start(t)
	_, big := up.PushLargeBlobImage(t, "library/big", "latest", size)
	m := startMirror(t, up)
	url := m.url + "/v2/library/big/blobs/" + big.String()
	up.CorruptBlobs(true)
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode == 200 {
		t.Fatalf("client received a complete corrupt body (%d bytes)", len(body))
	}
	if len(body) >= size {
		t.Fatalf("client received %d bytes of a %d-byte corrupt blob", len(body), size)
	}
	eventually(t, "the failed fill to clean up", func() bool { return len(tmpFiles(t, m.dataDir)) == 0 })
	if blobFiles(t, m.dataDir)[big.Encoded()] {
		t.Fatal("corrupt content was cached")
	}
	up.CorruptBlobs(false)
	resp2, body := send(t, http.MethodGet, url)
	if resp2.StatusCode != 200 || digest.FromBytes(body) != big {
		t.Fatalf("pull after recovery: %d, digest %s", resp2.StatusCode, digest.FromBytes(body))
	}
	verifyBlobFiles(t, m.dataDir)
}

func TestTagRevalidation(t *testing.T) {
	up := testupstream.Start(t)
	first := up.PushRandomImage(t, "library/app", "latest", 1, 512)

	t.Run("fresh tags are not revalidated", func(t *testing.T) {
		m := startMirror(t, up, func(c *mirrorSetup) { c.TagTTL = time.Hour })
		pullAll(t, m, "library/app:latest")
		heads := up.ManifestRequests(http.MethodHead)
		gets := up.ManifestRequests(http.MethodGet)
		pullAll(t, m, "library/app:latest")
		if up.ManifestRequests(http.MethodHead) != heads || up.ManifestRequests(http.MethodGet) != gets {
			t.Error("a tag younger than the TTL was sent upstream")
		}
	})

	t.Run("a moved tag is seen after the TTL", func(t *testing.T) {
		m := startMirror(t, up, func(c *mirrorSetup) { c.TagTTL = time.Nanosecond })
		if got := pullAll(t, m, "library/app:latest"); got != testupstream.Digest(t, first) {
			t.Fatalf("first pull %s", got)
		}
		heads := up.ManifestRequests(http.MethodHead)
		if got := pullAll(t, m, "library/app:latest"); got != testupstream.Digest(t, first) {
			t.Fatalf("revalidated pull %s", got)
		}
		if up.ManifestRequests(http.MethodHead) <= heads {
			t.Error("an expired tag was not revalidated with a HEAD")
		}
		second := up.PushRandomImage(t, "library/app", "latest", 1, 512)
		if got := pullAll(t, m, "library/app:latest"); got != testupstream.Digest(t, second) {
			t.Fatalf("after the tag moved: %s, want %s", got, testupstream.Digest(t, second))
		}
	})
}

func TestUpstreamDownServesCache(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/alpine", "latest", 2, 2048)
	idx := up.PushRandomIndex(t, "library/multi", "1", []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}, 1, 1024)
	m := startMirror(t, up, func(c *mirrorSetup) {
		c.TagTTL = time.Nanosecond
		c.UpstreamTimeout = 5 * time.Second
	})
	pullAll(t, m, "library/alpine:latest")
	pullAll(t, m, "library/multi:1")
	send(t, http.MethodGet, m.url+"/v2/library/alpine/tags/list")

	for _, fault := range []struct {
		name string
		set  func()
	}{
		{"down", func() { up.SetDown(true) }},
		{"503", func() { up.SetStatus(503, "") }},
		{"429", func() { up.SetStatus(429, "30") }},
	} {
		t.Run(fault.name, func(t *testing.T) {
			fault.set()
			defer up.ClearFaults()
			if got := pullAll(t, m, "library/alpine:latest"); got != testupstream.Digest(t, img) {
				t.Errorf("stale pull: %s", got)
			}
			if got := pullAll(t, m, "library/multi:1"); got != testupstream.Digest(t, idx) {
				t.Errorf("stale index pull: %s", got)
			}
			resp, body := send(t, http.MethodGet, m.url+"/v2/library/alpine/tags/list")
			if resp.StatusCode != 200 || !strings.Contains(string(body), "latest") {
				t.Errorf("tags/list while upstream is %s: %d %s", fault.name, resp.StatusCode, body)
			}
			resp, body = send(t, http.MethodGet, m.url+"/v2/library/never-pulled/manifests/latest")
			if resp.StatusCode < 429 {
				t.Errorf("uncached manifest while upstream is %s: %d %s", fault.name, resp.StatusCode, body)
			}
		})
	}
}

// TestOutageServesStaleFast: once upstream fails to answer a revalidation
// (here: it stalls), cached tags are served at once without asking it
// again, instead of each pull waiting out timeouts.
func TestOutageServesStaleFast(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/alpine", "latest", 1, 1024)
	m := startMirror(t, up, func(c *mirrorSetup) {
		c.TagTTL = time.Nanosecond
		c.RevalidateTimeout = 300 * time.Millisecond
		c.OutageBackoff = time.Hour
	})
	pullAll(t, m, "library/alpine:latest")
	send(t, http.MethodGet, m.url+"/v2/library/alpine/tags/list")
	up.SetLatency(time.Minute) // a black hole: nothing answers
	defer up.ClearFaults()

	resp, _ := send(t, http.MethodGet, m.url+"/v2/library/alpine/manifests/latest")
	if resp.StatusCode != 200 || resp.Header.Get("X-Regmirror-Cache") != "stale" {
		t.Fatalf("first pull during the outage: %d, cache %q", resp.StatusCode, resp.Header.Get("X-Regmirror-Cache"))
	}
	heads := up.ManifestRequests(http.MethodHead)
	tags := up.Count(http.MethodGet, "/v2/library/alpine/tags/list")
	for i := 0; i < 5; i++ {
		if got := pullAll(t, m, "library/alpine:latest"); got != testupstream.Digest(t, img) {
			t.Fatalf("stale pull: %s", got)
		}
		resp, _ := send(t, http.MethodGet, m.url+"/v2/library/alpine/tags/list")
		if resp.StatusCode != 200 {
			t.Fatalf("tags/list during the outage: %d", resp.StatusCode)
		}
	}
	if n := up.ManifestRequests(http.MethodHead); n != heads {
		t.Errorf("upstream marked out was asked %d more times", n-heads)
	}
	if n := up.Count(http.MethodGet, "/v2/library/alpine/tags/list"); n != tags {
		t.Errorf("tags/list went upstream %d more times during the outage", n-tags)
	}
}

// TestMovedTagGetFailsServesStale: the tag moved upstream, whose HEAD
// answers but whose manifest GET does not (Docker Hub's pull budget spent:
// 429, or a failing GET path: 503). The cached manifest is served stale,
// as when the HEAD fails, and the registry is marked out.
func TestMovedTagGetFailsServesStale(t *testing.T) {
	for _, code := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			up := testupstream.Start(t)
			first := up.PushRandomImage(t, "library/app", "latest", 1, 512)
			m := startMirror(t, up, func(c *mirrorSetup) {
				c.TagTTL = time.Nanosecond
				c.OutageBackoff = time.Hour
			})
			pullAll(t, m, "library/app:latest")
			up.PushRandomImage(t, "library/app", "latest", 1, 512)
			up.SetManifestGETStatus(code, "60")
			resp, body := send(t, http.MethodGet, m.url+"/v2/library/app/manifests/latest")
			if resp.StatusCode != 200 || digest.FromBytes(body) != testupstream.Digest(t, first) || resp.Header.Get("X-Regmirror-Cache") != "stale" {
				t.Fatalf("GET of the moved tag's manifest answered %d upstream: mirror %d, cache %q, %.100s; want the cached manifest, stale",
					code, resp.StatusCode, resp.Header.Get("X-Regmirror-Cache"), body)
			}
			heads := up.ManifestRequests(http.MethodHead)
			send(t, http.MethodGet, m.url+"/v2/library/app/manifests/latest")
			if n := up.ManifestRequests(http.MethodHead); n != heads {
				t.Errorf("the registry was asked again (%d HEADs) instead of being marked out", n-heads)
			}
		})
	}
}

// TestOfflineTagList: offline, the kept tag list is served without asking
// upstream; a page of a paginated listing, never kept, is refused at once.
func TestOfflineTagList(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/alpine", "3.20", 1, 512)
	dataDir := t.TempDir()
	m := startMirror(t, up, func(c *mirrorSetup) { c.DataDir = dataDir })
	_, want := send(t, http.MethodGet, m.url+"/v2/library/alpine/tags/list")
	m.stop()

	m = startMirror(t, up, func(c *mirrorSetup) { c.DataDir = dataDir; c.Offline = true })
	before := up.Count(http.MethodGet, "/v2/library/alpine/tags/list")
	resp, body := send(t, http.MethodGet, m.url+"/v2/library/alpine/tags/list")
	if resp.StatusCode != 200 || !bytes.Equal(body, want) || resp.Header.Get("X-Regmirror-Cache") != "hit" {
		t.Fatalf("offline tags/list: %d %q %s", resp.StatusCode, resp.Header.Get("X-Regmirror-Cache"), body)
	}
	resp, body = send(t, http.MethodGet, m.url+"/v2/library/alpine/tags/list?n=1")
	wantWireError(t, resp, body, http.StatusNotFound, "NAME_UNKNOWN")
	if !strings.Contains(string(body), "offline") {
		t.Errorf("the refusal does not say the mirror is offline: %s", body)
	}
	if n := up.Count(http.MethodGet, "/v2/library/alpine/tags/list"); n != before {
		t.Errorf("offline mirror asked upstream %d times", n-before)
	}
}

// pagedTags is a registry whose tag list comes in two pages, the first
// with a next link, as registries answer a request with n.
type pagedTags struct {
	stubUpstream
	mu    sync.Mutex
	asked []string // the queries upstream saw
}

func (p *pagedTags) ListTags(_ context.Context, _ string, rawQuery string) (upstream.TagPage, error) {
	p.mu.Lock()
	p.asked = append(p.asked, rawQuery)
	p.mu.Unlock()
	if q, _ := url.ParseQuery(rawQuery); q.Get("last") == "" {
		return upstream.TagPage{Body: []byte(`{"name":"x","tags":["a","b"]}`), Next: url.Values{"n": {"2"}, "last": {"b"}}}, nil
	}
	return upstream.TagPage{Body: []byte(`{"name":"x","tags":["c"]}`)}, nil
}

// TestTagListPages: a tag list upstream pages is paged for the client too:
// the answer has a Link to the next page under the mirror's own path, with
// the client's other parameters (ns) kept, and following it asks upstream
// for that page. Clients that page (crane, skopeo) would otherwise stop
// after the first.
func TestTagListPages(t *testing.T) {
	store := tempStore(t)
	corp := &pagedTags{stubUpstream: stubUpstream{"registry.corp:5000"}}
	s, err := New(Options{Registries: []Upstream{stubUpstream{"docker.io"}, corp}, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	resp := serveOnce(s, "GET", "/v2/team/x/tags/list?n=2&ns=registry.corp%3A5000", "203.0.113.7")
	wantLink := `</v2/team/x/tags/list?last=b&n=2&ns=registry.corp%3A5000>; rel="next"`
	if got := string(resp.Header.Peek("Link")); resp.StatusCode() != 200 || got != wantLink {
		t.Fatalf("first page: %d, Link %q, want %q", resp.StatusCode(), got, wantLink)
	}
	resp = serveOnce(s, "GET", "/v2/team/x/tags/list?last=b&n=2&ns=registry.corp%3A5000", "203.0.113.7")
	if resp.StatusCode() != 200 || string(resp.Body()) != `{"name":"x","tags":["c"]}` || len(resp.Header.Peek("Link")) != 0 {
		t.Fatalf("second page: %d %s, Link %q", resp.StatusCode(), resp.Body(), resp.Header.Peek("Link"))
	}
	if want := []string{"n=2", "last=b&n=2"}; !slices.Equal(corp.asked, want) {
		t.Errorf("upstream was asked %q, want %q", corp.asked, want)
	}
}

// holdBook is FillHooks that keeps the eviction holds in a book.
type holdBook struct {
	mu   sync.Mutex
	held map[digest.Digest]int
}

func (h *holdBook) Hold(d digest.Digest) func() {
	h.mu.Lock()
	h.held[d]++
	h.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			h.held[d]--
			h.mu.Unlock()
		})
	}
}

func (h *holdBook) NoSpace(context.Context, int64) bool { return false }

// commitsSeen is a cache observer that notes which commits were made
// without an eviction hold on their digest.
type commitsSeen struct {
	book   *holdBook
	mu     sync.Mutex
	added  int
	unheld []digest.Digest
}

func (c *commitsSeen) BlobAdded(info cache.BlobInfo) {
	c.book.mu.Lock()
	held := c.book.held[info.Digest] > 0
	c.book.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.added++
	if !held {
		c.unheld = append(c.unheld, info.Digest)
	}
}
func (c *commitsSeen) BlobAccessed(digest.Digest, time.Time) {}
func (c *commitsSeen) BlobRemoved(digest.Digest)             {}

// TestCommitsHeldAgainstEviction: whatever a pull stores (the manifest as
// well as its blobs) is committed under an eviction hold on its digest, so
// that a commit racing eviction's delete of the same digest waits for the
// delete to end: otherwise the delete's late notice makes eviction forget
// the blob just stored, which then is never evicted nor counted.
func TestCommitsHeldAgainstEviction(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/alpine", "latest", 2, 4096)
	book := &holdBook{held: map[digest.Digest]int{}}
	m := startMirror(t, up, func(st *mirrorSetup) { st.Hooks = book })
	seen := &commitsSeen{book: book}
	m.store.Subscribe(seen)
	if got := testpull.NS(t, m.url, "docker.io", "library/alpine", "latest"); got != testupstream.Digest(t, img) {
		t.Fatalf("pulled %s", got)
	}
	seen.mu.Lock()
	defer seen.mu.Unlock()
	if seen.added != 4 || len(seen.unheld) != 0 {
		t.Fatalf("%d commits (want 4: manifest, config, 2 layers), without a hold: %v", seen.added, seen.unheld)
	}
}
