package upstream

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

func mustGuard(t *testing.T, registryURL string, allow ...string) *addrGuard {
	t.Helper()
	u, err := url.Parse(registryURL)
	if err != nil {
		t.Fatal(err)
	}
	var ps []netip.Prefix
	for _, a := range allow {
		ps = append(ps, netip.MustParsePrefix(a))
	}
	g, err := newAddrGuard(u, ps)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestAddrGuard: the dialer's check on resolved addresses. Loopback,
// link-local (cloud metadata included), private, CGNAT, unspecified and
// other special ranges are refused; the registry's own address is allowed
// on its own port only, not on another port, nor another address of the
// same range; configured prefixes are allowed on any port.
func TestAddrGuard(t *testing.T) {
	g := mustGuard(t, "http://127.0.0.1:5000", "10.1.0.0/16", "fd12::/64")
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:5000", true},           // the registry itself
		{"[::ffff:127.0.0.1]:5000", true},  // the same, IPv4-mapped
		{"127.0.0.1:5001", false},          // another port of the registry's host
		{"127.0.0.2:5000", false},          // another loopback address
		{"[::1]:5000", false},              // IPv6 loopback is another address
		{"[::ffff:127.0.0.1]:5001", false}, // mapped, other port
		{"169.254.169.254:80", false},      // cloud metadata
		{"[fd00:ec2::254]:80", false},      // AWS metadata over IPv6
		{"[fe80::1]:80", false},            // IPv6 link-local
		{"[fe80::1%lo]:80", false},         // with a zone
		{"10.0.0.1:443", false},            // RFC 1918
		{"172.16.5.4:443", false},
		{"192.168.1.1:443", false},
		{"100.64.0.1:443", false}, // CGNAT
		{"0.0.0.0:80", false},     // unspecified
		{"[::]:80", false},
		{"[fc00::1]:80", false},            // unique local
		{"[64:ff9b::7f00:1]:80", false},    // NAT64 of 127.0.0.1
		{"[64:ff9b::a9fe:a9fe]:80", false}, // NAT64 of 169.254.169.254
		{"224.0.0.1:80", false},            // multicast
		{"10.1.2.3:1234", true},            // allow_private_addresses, any port
		{"10.2.0.1:443", false},            // outside it
		{"[fd12::5]:8080", true},
		{"8.8.8.8:443", true}, // public
		{"[2606:4700::1111]:443", true},
		{"[64:ff9b::808:808]:443", true}, // NAT64 of a public address
	} {
		err := g.allowed("x:1", netip.MustParseAddrPort(tc.addr))
		if (err == nil) != tc.ok {
			t.Errorf("%s: allowed = %v, want %v (err %v)", tc.addr, err == nil, tc.ok, err)
		}
		if err != nil && !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v does not wrap ErrRefused", tc.addr, err)
		}
	}

	// A proxy the environment names is allowed, as dialled by name only.
	g.mu.Lock()
	g.proxies["10.9.9.9:3128"] = true
	g.mu.Unlock()
	if err := g.allowed("10.9.9.9:3128", netip.MustParseAddrPort("10.9.9.9:3128")); err != nil {
		t.Errorf("proxy: %v", err)
	}
	if err := g.allowed("evil:3128", netip.MustParseAddrPort("10.9.9.9:3128")); err == nil {
		t.Error("the proxy's address is allowed for another dial")
	}
}

// TestAddrGuardLearnsOwnName: a registry configured by host name may reach
// what that name resolved to on first use (here localhost: 127.0.0.1 and
// ::1), on its port only.
func TestAddrGuardLearnsOwnName(t *testing.T) {
	g := mustGuard(t, "http://localhost:5000")
	if err := g.allowed("localhost:5000", netip.MustParseAddrPort("127.0.0.1:5000")); err == nil {
		t.Fatal("allowed before the name was resolved")
	}
	if err := g.learn(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := g.allowed("localhost:5000", netip.MustParseAddrPort("127.0.0.1:5000")); err != nil {
		t.Errorf("own address: %v", err)
	}
	for _, a := range []string{"127.0.0.1:5001", "127.0.0.2:5000", "169.254.169.254:5000"} {
		if err := g.allowed("localhost:5000", netip.MustParseAddrPort(a)); err == nil {
			t.Errorf("%s allowed", a)
		}
	}
}

func TestCheckURL(t *testing.T) {
	g := mustGuard(t, "http://127.0.0.1:5000")
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:5000/v2/", true},
		{"http://registry.example/v2/", true}, // names are checked by the dialer
		{"http://127.0.0.1:5001/token", false},
		{"http://localhost:5001/token", false},
		{"http://foo.localhost/x", false},
		{"http://169.254.169.254/latest/meta-data", false},
		{"http://[fd00:ec2::254]/latest/meta-data", false},
		{"ftp://example.com/x", false},
		{"file:///etc/passwd", false},
	} {
		u, _ := url.Parse(tc.url)
		if err := g.checkURL(u); (err == nil) != tc.ok {
			t.Errorf("%s: ok = %v, want %v (%v)", tc.url, err == nil, tc.ok, err)
		}
	}
}

// TestCheckRedirect: hop limit, http(s) only, no downgrade anywhere in the
// chain, credentials kept on the same origin and dropped on any change of
// scheme, host or port (Go keeps them when only the port changes).
func TestCheckRedirect(t *testing.T) {
	req := func(u string) *http.Request {
		r, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Authorization", "Basic dTpw")
		r.Header.Set("Range", "bytes=10-")
		return r
	}
	first := req("https://registry.example/v2/a/blobs/sha256:x")
	for _, tc := range []struct {
		to       string
		via      []*http.Request
		ok, auth bool
	}{
		{"https://registry.example/v2/a/blobs/y", []*http.Request{first}, true, true},
		{"https://registry.example:443/y", []*http.Request{first}, true, true},
		{"https://registry.example:8443/y", []*http.Request{first}, true, false}, // port
		{"https://cdn.example/y", []*http.Request{first}, true, false},           // host
		{"http://registry.example/y", []*http.Request{first}, false, false},      // downgrade
		{"http://cdn.example/y", []*http.Request{req("http://r.example/"), first}, false, false},
		{"ftp://registry.example/y", []*http.Request{first}, false, false},
		{"https://cdn.example/y", []*http.Request{first, first, first, first, first}, true, false},
		{"https://cdn.example/y", []*http.Request{first, first, first, first, first, first}, false, false},
	} {
		r := req(tc.to)
		err := checkRedirect(r, tc.via)
		if (err == nil) != tc.ok {
			t.Errorf("%s after %d: ok = %v, want %v (%v)", tc.to, len(tc.via), err == nil, tc.ok, err)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrRefused) {
				t.Errorf("%s: %v is not ErrRefused", tc.to, err)
			}
			continue
		}
		if got := r.Header.Get("Authorization") != ""; got != tc.auth {
			t.Errorf("%s: Authorization kept = %v, want %v", tc.to, got, tc.auth)
		}
		if r.Header.Get("Range") == "" {
			t.Errorf("%s: Range dropped", tc.to)
		}
	}
}

// TestCheckRealm: https realms always (another host included, as Docker
// Hub's auth.docker.io); http only for a registry reached over http, and
// with credentials only on the registry's own host and port.
func TestCheckRealm(t *testing.T) {
	newR := func(u string, creds bool) *Registry {
		o := Options{Name: "r.example", URL: u}
		if creds {
			o.Username, o.Password = "u", "p"
		}
		r, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ch := func(realm string) *transport.Challenge {
		return &transport.Challenge{Scheme: "bearer", Parameters: map[string]string{"realm": realm}}
	}
	for _, tc := range []struct {
		registry string
		creds    bool
		realm    string
		ok       bool
	}{
		{"https://registry-1.docker.io", true, "https://auth.docker.io/token", true},
		{"https://registry-1.docker.io", false, "http://auth.docker.io/token", false},
		{"https://r.example", true, "http://r.example/token", false},
		{"http://r.example:5000", true, "http://r.example:5000/token", true},
		{"http://r.example:5000", true, "http://r.example:5001/token", false},
		{"http://r.example:5000", true, "http://auth.example/token", false},
		{"http://r.example:5000", false, "http://auth.example/token", true},
		{"http://r.example:5000", true, "https://auth.example/token", true},
		{"http://127.0.0.1:5000", false, "http://localhost:5001/token", false},
		{"http://127.0.0.1:5000", false, "https://169.254.169.254/token", false},
		{"https://r.example", false, "ftp://r.example/token", false},
		{"https://r.example", false, "::", false},
	} {
		err := newR(tc.registry, tc.creds).checkRealm(ch(tc.realm))
		if (err == nil) != tc.ok {
			t.Errorf("registry %s (credentials %v), realm %s: ok = %v, want %v (%v)", tc.registry, tc.creds, tc.realm, err == nil, tc.ok, err)
		}
		if err != nil && !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v is not ErrRefused", tc.realm, err)
		}
	}
}
