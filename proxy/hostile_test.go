package proxy

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testupstream"
)

// Issue 8 item 3, end to end: a hostile or hijacked upstream, met through
// requests as clients send them.

// wantNothingLeaked: a client's answer carries none of these.
func wantNothingLeaked(t *testing.T, body []byte, forbidden ...string) {
	t.Helper()
	for _, f := range forbidden {
		if f != "" && strings.Contains(string(body), f) {
			t.Errorf("the client's answer contains %q: %s", f, body)
		}
	}
}

// TestHostileManifestRedirect: a manifest-by-tag answer redirecting to an
// internal address (the 302 → http://127.0.0.1:<port>/latest/meta-data)
// is not followed: the client gets a registry error without the internal
// body, the internal listener sees no connection and none of the
// registry's Basic credentials, and nothing is cached under the tag.
func TestHostileManifestRedirect(t *testing.T) {
	up := testupstream.Start(t, testupstream.WithCredentials("mirror", "hub-secret"), testupstream.WithBasicChallenge())
	img := up.PushRandomImage(t, "library/alpine", "3.20", 1, 512)
	want := testupstream.Digest(t, img)
	m := startMirror(t, up, func(c *mirrorSetup) {
		c.Upstreams[0].Username, c.Upstreams[0].Password = "mirror", "hub-secret"
	})
	path := m.url + "/v2/library/alpine/manifests/3.20"
	for _, c := range testupstream.StartCanaries(t) {
		up.RedirectManifests(c.URL() + "/latest/meta-data")
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, body := send(t, method, path)
			if resp.StatusCode == http.StatusOK {
				t.Fatalf("%s via a redirect to %s: 200 %q", method, c.Host(), body)
			}
			if method == http.MethodGet {
				wantWireError(t, resp, body, http.StatusBadGateway, "UNAVAILABLE")
			}
			wantNothingLeaked(t, body, c.Secret(), c.Host(), "127.0.0.", "meta-data", "hub-secret")
		}
		c.WantUntouched(t)
	}
	up.RedirectManifests("")
	resp, _ := send(t, http.MethodGet, path)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != want.String() {
		t.Fatalf("after the redirect is gone: %d %s, want %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), want)
	}
}

// TestHostileForeignRealm: a challenge naming a token realm on an internal
// address (http://localhost:<port>/token) gets none of the registry's
// credentials, no connection at all, and the realm service's body never
// reaches the client's error detail.
func TestHostileForeignRealm(t *testing.T) {
	up := testupstream.Start(t, testupstream.WithCredentials("mirror", "hub-secret"))
	up.PushRandomImage(t, "library/alpine", "3.20", 1, 512)
	m := startMirror(t, up, func(c *mirrorSetup) {
		c.Upstreams[0].Username, c.Upstreams[0].Password = "mirror", "hub-secret"
	})
	cs := testupstream.StartCanaries(t)
	port := cs[0].Host()[strings.LastIndexByte(cs[0].Host(), ':')+1:]
	for i, realm := range []string{"http://localhost:" + port + "/token", cs[1].URL() + "/token"} {
		up.SetRealm(realm)
		resp, body := send(t, http.MethodGet, m.url+"/v2/library/alpine/manifests/3.20")
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("realm %s: 200", realm)
		}
		wantNothingLeaked(t, body, cs[i].Secret(), cs[i].Host(), port, "localhost", "hub-secret")
		cs[i].WantUntouched(t)
	}
}

// TestHostileInvalidManifest: a 200 whose body is not a manifest (an HTML
// page, a metadata document) is refused with 502 MANIFEST_INVALID and not
// cached: once upstream behaves, the tag serves the real manifest.
func TestHostileInvalidManifest(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/alpine", "3.20", 1, 512)
	want := testupstream.Digest(t, img)
	m := startMirror(t, up)
	path := m.url + "/v2/library/alpine/manifests/3.20"
	for _, tc := range []struct{ ct, body string }{
		{"text/html", "<html>internal-page</html>"},
		{"application/json", `{"AccessKeyId":"internal-page"}`},
		{"application/vnd.oci.image.manifest.v1+json", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`},
	} {
		up.ServeManifestBody([]byte(tc.body), tc.ct)
		resp, body := send(t, http.MethodGet, path)
		wantWireError(t, resp, body, http.StatusBadGateway, "MANIFEST_INVALID")
		wantNothingLeaked(t, body, "internal-page")
	}
	up.ServeManifestBody(nil, "")
	resp, _ := send(t, http.MethodGet, path)
	if got := resp.Header.Get("Docker-Content-Digest"); resp.StatusCode != http.StatusOK || got != want.String() {
		t.Fatalf("after upstream behaves: %d %s, want %s", resp.StatusCode, got, want)
	}
}

// TestHostileErrorDetail: upstream error bodies and upstream URLs stay in
// the log; the client's detail is a short reason.
func TestHostileErrorDetail(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/alpine", "3.20", 1, 512)
	m := startMirror(t, up)
	up.SetStatus(http.StatusInternalServerError, "")
	resp, body := send(t, http.MethodGet, m.url+"/v2/library/alpine/manifests/3.20")
	wantWireError(t, resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
	wantNothingLeaked(t, body, "injected fault", up.Host(), "/v2/library")
	if !strings.Contains(string(body), "500") {
		t.Errorf("detail does not say what upstream answered: %s", body)
	}
}

// TestHostileBlobRedirect: Docker Hub-style blob redirects to a CDN keep
// working without the registry's token when allow_private_addresses lets
// the mirror reach the CDN's (loopback) address; a blob redirect to an
// address not allowed is refused and never reached.
func TestHostileBlobRedirect(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/alpine", "3.20", 2, 4096)
	cdn := up.StartCDN(t, "127.0.0.3:0")
	up.RedirectBlobs(cdn.URL())
	m := startMirror(t, up, func(c *mirrorSetup) {
		c.Upstreams[0].AllowPrivateAddresses = []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")}
	})
	if got := pullAll(t, m, "library/alpine:3.20"); got != testupstream.Digest(t, img) {
		t.Fatalf("pulled %s", got)
	}
	if n := len(cdn.Requests()); n != 3 { // config and two layers
		t.Errorf("CDN requests %v, want 3", cdn.Requests())
	}
	if a := cdn.Authorizations(); len(a) != 0 {
		t.Errorf("the registry's token reached the CDN: %q", a)
	}

	other := up.PushRandomImage(t, "library/busybox", "1", 1, 4096)
	c := testupstream.StartCanary(t, "127.0.0.2:0")
	up.RedirectBlobs(c.URL())
	layer := testupstream.LayerDigests(t, other)[0]
	resp, body := send(t, http.MethodGet, m.url+"/v2/library/busybox/blobs/"+layer.String())
	if resp.StatusCode == http.StatusOK {
		t.Fatalf("blob redirected to %s: 200", c.Host())
	}
	wantNothingLeaked(t, body, c.Secret(), c.Host())
	c.WantUntouched(t)
	if digest.FromBytes(body) == layer {
		t.Fatal("got the layer")
	}
}
