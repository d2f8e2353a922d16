package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/regmirror/regmirror/internal/testupstream"
)

// assertClientSafe: what a client may be told carries none of the canary's
// body, address or the upstream's error text.
func assertClientSafe(t *testing.T, err error, forbidden ...string) {
	t.Helper()
	reason, ok := ClientReason(err)
	if !ok || reason == "" {
		t.Fatalf("ClientReason(%v) = %q, %v", err, reason, ok)
	}
	for _, f := range forbidden {
		if f != "" && strings.Contains(reason, f) {
			t.Errorf("client reason %q contains %q", reason, f)
		}
	}
}

// TestRedirectToCanary: a manifest answer redirecting to an internal
// address (another port of the registry's own host, another loopback
// address) is refused before any connection, with or without credentials,
// and the caller gets ErrRefused, not the internal body.
func TestRedirectToCanary(t *testing.T) {
	for _, mode := range []string{"bearer", "basic"} {
		t.Run(mode, func(t *testing.T) {
			var up *testupstream.Server
			o := Options{Name: "docker.io"}
			if mode == "basic" {
				up = testupstream.Start(t, testupstream.WithCredentials("u", "secret-pass"), testupstream.WithBasicChallenge())
				o.Username, o.Password = "u", "secret-pass"
			} else {
				up = testupstream.Start(t)
			}
			up.PushRandomImage(t, "library/alpine", "3.20", 1, 100)
			r := newReg(t, up, o)
			ctx := context.Background()
			for _, c := range testupstream.StartCanaries(t) {
				up.RedirectManifests(c.URL() + "/latest/meta-data")
				body, _, err := r.GetManifest(ctx, "alpine", "3.20")
				if !errors.Is(err, ErrRefused) {
					t.Fatalf("GET redirected to %s: %v (body %q), want ErrRefused", c.Host(), err, body)
				}
				assertClientSafe(t, err, c.Secret(), c.Host(), "127.0.0.")
				if _, err := r.HeadManifest(ctx, "alpine", "3.20"); !errors.Is(err, ErrRefused) {
					t.Fatalf("HEAD redirected to %s: %v, want ErrRefused", c.Host(), err)
				}
				c.WantUntouched(t)
			}
			up.RedirectManifests("")
			if _, _, err := r.GetManifest(ctx, "alpine", "3.20"); err != nil {
				t.Fatalf("after the redirect is gone: %v", err)
			}
		})
	}
}

// TestSignedURLsStayOutOfErrors: a redirect target's query (a blob
// store's presigned URL: signature, credential) is not repeated in the
// error the caller gets, nor in the registry's log, when the redirect is
// refused or the hop fails.
func TestSignedURLsStayOutOfErrors(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/alpine", "3.20", 1, 100)
	var log syncBuffer
	r := newReg(t, up, Options{Name: "docker.io", Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	const secret = "sig-6d1f0c2a"
	for _, target := range []string{
		testupstream.StartCanaries(t)[0].URL() + "/obj?X-Amz-Signature=" + secret, // refused: another loopback port
		"ftp://cdn.example/obj?token=" + secret,                                   // refused: not http(s)
	} {
		up.RedirectManifests(target)
		_, _, err := r.GetManifest(context.Background(), "alpine", "3.20")
		if err == nil {
			t.Fatalf("redirect to %s: no error", target)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("redirect to %s: the error names the query: %v", target, err)
		}
	}
	if strings.Contains(log.String(), secret) {
		t.Errorf("the log names a redirect target's query:\n%s", log.String())
	}
}

// TestCredentialsDroppedOnPortChange: when the dialer may reach another port
// of the registry's host (allow_private_addresses), a redirect there still
// carries no Basic credentials: Go alone compares host names only.
func TestCredentialsDroppedOnPortChange(t *testing.T) {
	up := testupstream.Start(t, testupstream.WithCredentials("u", "secret-pass"), testupstream.WithBasicChallenge())
	img := up.PushRandomImage(t, "a", "v1", 1, 1000)
	cdn := up.StartCDN(t, "127.0.0.1:0")
	up.RedirectBlobs(cdn.URL())
	r := newReg(t, up, Options{Username: "u", Password: "secret-pass",
		AllowPrivateAddresses: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	d := testupstream.LayerDigests(t, img)[0]
	b, err := r.GetBlob(context.Background(), "a", d, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readBlob(t, b)
	if err != nil || !bytes.Equal(got, testupstream.LayerBytes(t, img, 0)) {
		t.Fatalf("blob through the redirect: %v", err)
	}
	if len(cdn.Requests()) != 1 {
		t.Fatalf("CDN requests %v, want 1", cdn.Requests())
	}
	if a := cdn.Authorizations(); len(a) != 0 {
		t.Errorf("the registry's credentials reached another port: %q", a)
	}
}

// TestBlobRedirectToCDN: Docker Hub-style blob redirects to a CDN on
// another host keep working (resume with Range included), without the
// registry's token; a CDN redirect to a refused address fails cleanly.
func TestBlobRedirectToCDN(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "a", "v1", 1, 1000)
	cdn := up.StartCDN(t, "127.0.0.3:0")
	up.RedirectBlobs(cdn.URL())
	r := newReg(t, up, Options{AllowPrivateAddresses: []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")}})
	d := testupstream.LayerDigests(t, img)[0]
	want := testupstream.LayerBytes(t, img, 0)
	ctx := context.Background()
	for _, off := range []int64{0, 600} {
		b, err := r.GetBlob(ctx, "a", d, off)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readBlob(t, b)
		if err != nil || b.Offset != off || !bytes.Equal(got, want[off:]) {
			t.Fatalf("offset %d: got %d bytes from %d, %v", off, len(got), b.Offset, err)
		}
	}
	if n := len(cdn.Requests()); n != 2 {
		t.Fatalf("CDN requests %v", cdn.Requests())
	}
	if a := cdn.Authorizations(); len(a) != 0 {
		t.Errorf("the registry's token reached the CDN: %q", a)
	}

	// Without the allowance the CDN's loopback address is refused.
	strict := newReg(t, up, Options{})
	if _, err := strict.GetBlob(ctx, "a", d, 0); !errors.Is(err, ErrRefused) {
		t.Fatalf("redirect to an address not allowed: %v", err)
	}
	if n := len(cdn.Requests()); n != 2 {
		t.Errorf("CDN reached without the allowance: %v", cdn.Requests())
	}
}

// TestHTTPSDowngradeRedirect: an https registry that redirects to http is
// refused even where the dialer would allow the address; the http listener
// sees no connection and no credentials.
func TestHTTPSDowngradeRedirect(t *testing.T) {
	c := testupstream.StartCanary(t, "127.0.0.1:0")
	reg := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			if _, _, ok := r.BasicAuth(); !ok {
				w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Redirect(w, r, c.URL()+r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(reg.Close)
	r, err := New(Options{Name: "r.example", URL: reg.URL, InsecureSkipVerify: true, Username: "u", Password: "secret-pass",
		RetryBackoff: 1, AllowPrivateAddresses: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = r.GetManifest(context.Background(), "a", "v1")
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("https→http redirect: %v, want ErrRefused", err)
	}
	c.WantUntouched(t)
}

// TestForeignRealm: a challenge naming a token realm on an internal address
// (the http://localhost:<port>/token, another loopback address) is
// refused before any connection: the registry's credentials go nowhere and
// the realm's body cannot come back in an error.
func TestForeignRealm(t *testing.T) {
	up := testupstream.Start(t, testupstream.WithCredentials("u", "secret-pass"))
	up.PushRandomImage(t, "a", "v1", 1, 100)
	ctx := context.Background()
	cs := testupstream.StartCanaries(t)
	port := cs[0].Host()[strings.LastIndexByte(cs[0].Host(), ':')+1:]
	for _, realm := range []struct {
		url string
		c   *testupstream.Canary
	}{
		{"http://localhost:" + port + "/token", cs[0]},
		{cs[0].URL() + "/token", cs[0]},
		{cs[1].URL() + "/token", cs[1]},
	} {
		up.SetRealm(realm.url)
		r := newReg(t, up, Options{Username: "u", Password: "secret-pass"})
		_, _, err := r.GetManifest(ctx, "a", "v1")
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("realm %s: %v, want ErrRefused", realm.url, err)
		}
		assertClientSafe(t, err, realm.c.Secret(), realm.c.Host(), "localhost", "secret-pass")
		realm.c.WantUntouched(t)
	}
	// Even where the dialer may reach the realm, credentials do not travel
	// in clear to another host.
	up.SetRealm("http://localhost:" + port + "/token")
	r := newReg(t, up, Options{Username: "u", Password: "secret-pass",
		AllowPrivateAddresses: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if _, _, err := r.GetManifest(ctx, "a", "v1"); !errors.Is(err, ErrRefused) {
		t.Fatalf("credentials to an http realm on another host: %v, want ErrRefused", err)
	}
	cs[0].WantUntouched(t)
	up.SetRealm("")
	if _, _, err := r.GetManifest(ctx, "a", "v1"); err != nil {
		t.Fatalf("own realm: %v", err)
	}
}

// TestInvalidManifestsRefused: 200 answers that are not manifests of a
// known type, or contradict their Content-Type, are ErrInvalidManifest.
func TestInvalidManifestsRefused(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomOCIImage(t, "a", "v1", 1, 100)
	raw := testupstream.RawManifest(t, img)
	r := newReg(t, up, Options{})
	ctx := context.Background()
	for _, tc := range []struct {
		name, ct string
		body     []byte
	}{
		{"html", "text/html", []byte("<html>metadata</html>")},
		{"metadata JSON", "application/json", []byte(`{"AccessKeyId":"AKIA","Token":"x"}`)},
		{"manifest as text/html", "text/html", raw},
		{"OCI manifest as a Docker list", MediaTypeDockerManifestList, raw},
		{"schema 1", "application/vnd.docker.distribution.manifest.v1+prettyjws", []byte(`{"schemaVersion":1,"name":"a","tag":"v1","fsLayers":[]}`)},
		{"empty", MediaTypeOCIManifest, make([]byte, 0)},
	} {
		up.ServeManifestBody(tc.body, tc.ct)
		_, _, err := r.GetManifest(ctx, "a", "v1")
		if !errors.Is(err, ErrInvalidManifest) {
			t.Errorf("%s: %v, want ErrInvalidManifest", tc.name, err)
		}
		assertClientSafe(t, err, "AKIA", "metadata")
	}
	// A generic Content-Type defers to the body's mediaType.
	up.ServeManifestBody(raw, "application/json")
	if _, d, err := r.GetManifest(ctx, "a", "v1"); err != nil || d.MediaType != MediaTypeOCIManifest {
		t.Fatalf("generic Content-Type: %+v %v", d, err)
	}
}

// TestClientReasonHidesUpstreamText: upstream error bodies and URLs stay in
// the error (for the log), out of the client's reason.
func TestClientReasonHidesUpstreamText(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "a", "v1", 1, 100)
	r := newReg(t, up, Options{Retries: -1})
	up.SetStatus(http.StatusInternalServerError, "")
	_, _, err := r.GetManifest(context.Background(), "a", "v1")
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "injected fault") {
		t.Fatalf("%v", err)
	}
	assertClientSafe(t, err, "injected fault", up.Host(), "/v2/")
	if reason, _ := ClientReason(err); !strings.Contains(reason, "500") {
		t.Errorf("reason %q lacks the status", reason)
	}
	if _, ok := ClientReason(io.EOF); ok {
		t.Error("ClientReason claims a foreign error")
	}
}

// TestGuardBehindProxy: an outbound proxy on a private address is allowed
// (the administrator configured it) and carries the registry's traffic;
// the dialer then sees only the proxy, but a redirect to a literal
// internal address is still refused by the URL check, so neither the proxy
// nor the canary is asked for it.
func TestGuardBehindProxy(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "a", "v1", 1, 100)
	target, err := url.Parse(up.URL())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var proxied []string
	rp := httputil.NewSingleHostReverseProxy(target) // keeps the Host header: the realm stays registry.example
	proxy := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		proxied = append(proxied, r.URL.String())
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	ln, err := net.Listen("tcp", "127.0.0.5:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy.Listener.Close()
	proxy.Listener = ln
	proxy.Start()
	t.Cleanup(proxy.Close)
	proxyURL, _ := url.Parse(proxy.URL)

	// registry.example does not resolve: only the proxy can reach it.
	r, err := New(Options{Name: "registry.example", URL: "http://registry.example", RetryBackoff: 1})
	if err != nil {
		t.Fatal(err)
	}
	r.addrs.proxyFunc = http.ProxyURL(proxyURL)
	ctx := context.Background()
	if _, _, err := r.GetManifest(ctx, "a", "v1"); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	mu.Lock()
	n := len(proxied)
	mu.Unlock()
	if n == 0 {
		t.Fatal("the proxy saw no request")
	}

	c := testupstream.StartCanary(t, "127.0.0.2:0")
	up.RedirectManifests(c.URL() + "/latest/meta-data")
	if _, _, err := r.GetManifest(ctx, "a", "v1"); !errors.Is(err, ErrRefused) {
		t.Fatalf("redirect to %s behind a proxy: %v, want ErrRefused", c.Host(), err)
	}
	c.WantUntouched(t)
	mu.Lock()
	defer mu.Unlock()
	for _, u := range proxied {
		if strings.Contains(u, c.Host()) {
			t.Errorf("the proxy was asked for %s", u)
		}
	}
}

// TestDialerChecksResolvedAddress: a redirect to a host name (not an IP
// literal, not "localhost") that resolves to an internal address passes
// the URL check and is refused by the dialer, on the address resolved at
// connect time. The machine's own host name serves as such a name.
func TestDialerChecksResolvedAddress(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || host == "localhost" {
		t.Skipf("no usable host name (%q, %v)", host, err)
	}
	ips, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip4", host)
	if err != nil || len(ips) == 0 || !ips[0].IsLoopback() {
		t.Skipf("host name %s does not resolve to a loopback address (%v, %v)", host, ips, err)
	}
	c := testupstream.StartCanary(t, ips[0].Unmap().String()+":0")
	up := testupstream.Start(t)
	up.PushRandomImage(t, "a", "v1", 1, 100)
	r := newReg(t, up, Options{})
	port := c.Host()[strings.LastIndexByte(c.Host(), ':')+1:]
	up.RedirectManifests("http://" + host + ":" + port + "/latest/meta-data")
	_, _, err = r.GetManifest(context.Background(), "a", "v1")
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("redirect to %s (%s): %v, want ErrRefused", host, ips[0], err)
	}
	c.WantUntouched(t)
}
