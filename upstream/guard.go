package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"code.dny.dev/ssrf"
)

// maxRedirects is how many redirects one request may follow.
const maxRedirects = 5

// ErrRefused: the mirror refused to go where upstream sent it: a
// connection to a loopback, link-local, private or other special-purpose
// address, a redirect that downgrades to http, leaves http(s) or goes on
// too long, or a token realm it may not send credentials to. It wraps
// ErrUnavailable (nothing usable came from upstream), so cached content is
// still served stale when a revalidation is refused.
var ErrRefused = fmt.Errorf("%w: refused by the mirror's upstream rules", ErrUnavailable)

// refusal is an ErrRefused with a client-safe reason (fixed text: no
// address, URL or upstream text) and a detail for the log.
type refusal struct {
	reason string
	detail string
}

func refuse(reason, detail string, args ...any) error {
	return &refusal{reason: reason, detail: fmt.Sprintf(detail, args...)}
}

func (e *refusal) Error() string { return ErrRefused.Error() + ": " + e.reason + ": " + e.detail }

func (e *refusal) Unwrap() error { return ErrRefused }

// addrGuard decides which addresses one registry's connections may reach.
// Its check runs in net.Dialer.Control, on the address actually being
// connected to after DNS resolution, so a name that resolves to a public
// address when a URL is checked and to an internal one at connect time (DNS
// rebinding) is still refused.
//
// Refused: everything code.dny.dev/ssrf denies by default (the IANA
// special-purpose registries: loopback, RFC 1918 private, CGNAT 100.64/10,
// link-local 169.254/16 with the cloud metadata address, "this network",
// multicast, documentation and benchmarking ranges; for IPv6 everything
// outside global unicast 2000::/3, so ::1, fe80::/10, fc00::/7 with AWS's
// fd00:ec2::254, and IPv4-mapped addresses), NAT64 addresses whose embedded
// IPv4 address is refused. Allowed despite that:
//   - the registry's own endpoint: the address its configured URL names (an
//     IP literal), or the addresses its host name resolved to the first time
//     it was dialled, on the URL's port only;
//   - the prefixes of Options.AllowPrivateAddresses, any port;
//   - the HTTP(S) proxy from the environment, which the administrator set.
type addrGuard struct {
	deny     *ssrf.Guardian
	allow    []netip.Prefix
	host     string // the registry URL's host, lower case, no brackets
	endpoint string // host:port as the transport dials it
	port     uint16

	mu      sync.Mutex
	own     map[netip.Addr]bool // the endpoint's private addresses
	learned bool                // own is final (an IP literal, or resolved once)
	proxies map[string]bool     // proxy host:port endpoints

	proxyFunc func(*http.Request) (*url.URL, error) // http.ProxyFromEnvironment; tests replace it
}

func newAddrGuard(u *url.URL, allow []netip.Prefix) (*addrGuard, error) {
	host := strings.ToLower(u.Hostname())
	port, err := portOf(u)
	if err != nil {
		return nil, err
	}
	g := &addrGuard{
		deny:     ssrf.New(ssrf.WithAnyPort(), ssrf.WithAnyNetwork()),
		allow:    allow,
		host:     host,
		endpoint: net.JoinHostPort(host, fmt.Sprint(port)),
		port:     port,
		own:      map[netip.Addr]bool{},
		proxies:  map[string]bool{},

		proxyFunc: http.ProxyFromEnvironment,
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		g.own[ip.Unmap()] = true
		g.learned = true
	}
	return g, nil
}

// portOf is u's port, or the scheme's default.
func portOf(u *url.URL) (uint16, error) {
	p := u.Port()
	if p == "" {
		switch u.Scheme {
		case "https":
			return 443, nil
		case "http":
			return 80, nil
		}
		return 0, fmt.Errorf("no port for scheme %q", u.Scheme)
	}
	var n uint16
	if _, err := fmt.Sscan(p, &n); err != nil || n == 0 {
		return 0, fmt.Errorf("bad port %q", p)
	}
	return n, nil
}

// allowed reports whether a connection to ap may be made; dialAddr is the
// host:port the transport asked for (before DNS resolution).
func (g *addrGuard) allowed(dialAddr string, ap netip.AddrPort) error {
	ip := ap.Addr().Unmap()
	g.mu.Lock()
	proxy := g.proxies[dialAddr]
	own := ap.Port() == g.port && g.own[ip]
	g.mu.Unlock()
	if proxy || own {
		return nil
	}
	for _, p := range g.allow {
		if p.Contains(ip) {
			return nil
		}
	}
	if err := g.safe(ip); err != nil {
		return refuse("connection to a loopback, link-local, private or special address refused",
			"%s (dialling %s): %v", ap, dialAddr, err)
	}
	return nil
}

// safe applies the deny lists; a NAT64 address (64:ff9b::/96, as DNS64
// synthesizes for IPv4-only hosts) is judged by the IPv4 address it embeds.
func (g *addrGuard) safe(ip netip.Addr) error {
	if ssrf.IPv6NAT64Prefix.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte(b[12:16]))
	}
	return g.deny.SafeAddr(ip)
}

// learn records, once, the addresses the registry's host name resolves to,
// so that a registry configured by name on a private network can be
// reached, and a later DNS answer cannot add other internal addresses.
func (g *addrGuard) learn(ctx context.Context) error {
	g.mu.Lock()
	done := g.learned
	g.mu.Unlock()
	if done {
		return nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", g.host)
	if err != nil {
		return err // the dial fails the same way; learning is tried again next time
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.learned {
		for _, ip := range ips {
			if g.safe(ip.Unmap()) != nil {
				g.own[ip.Unmap()] = true
			}
		}
		g.learned = true
	}
	return nil
}

// dialContext is the transport's one dialer: every connection of the
// registry, to itself, its token realm, redirect targets or a proxy.
func (g *addrGuard) dialContext(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == g.endpoint {
			lctx, cancel := context.WithTimeout(ctx, timeout)
			err := g.learn(lctx)
			cancel()
			if err != nil {
				return nil, err
			}
		}
		d := &net.Dialer{
			Timeout:   timeout,
			KeepAlive: 30 * time.Second,
			Control: func(_, address string, _ syscall.RawConn) error {
				ap, err := netip.ParseAddrPort(address)
				if err != nil {
					return refuse("connection refused", "unparsable address %q", address)
				}
				return g.allowed(addr, ap)
			},
		}
		return d.DialContext(ctx, network, addr)
	}
}

// proxy is http.ProxyFromEnvironment that also lets the dialer connect to
// the proxy it names, wherever that is: the administrator configured it.
// Through a proxy the dialer only sees the proxy's address; checkURL still
// refuses literal internal addresses and localhost in every request URL,
// and the proxy's own rules must do the rest.
func (g *addrGuard) proxy(req *http.Request) (*url.URL, error) {
	u, err := g.proxyFunc(req)
	if u != nil && err == nil {
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443", "socks5": "1080", "socks5h": "1080"}[u.Scheme]
		}
		g.mu.Lock()
		g.proxies[net.JoinHostPort(strings.ToLower(u.Hostname()), port)] = true
		g.mu.Unlock()
	}
	return u, err
}

// loggable is u as errors and logs may show it: without a password, and
// without its query, which after a redirect is a blob store's presigned
// URL (a signature, a credential) or a CDN's token.
func loggable(u *url.URL) string {
	c := *u
	c.RawQuery, c.ForceQuery, c.Fragment, c.RawFragment = "", false, "", ""
	s := c.Redacted()
	if u.RawQuery != "" {
		s += "?…"
	}
	return s
}

// withoutQuery drops the query from the URL a transport error names (the
// last hop's, a redirect target's after a redirect): see loggable.
func withoutQuery(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		if u, perr := url.Parse(uerr.URL); perr == nil {
			uerr.URL = loggable(u)
		}
	}
	return err
}

// checkURL refuses, before any connection, a URL that is not http(s) or
// whose host is "localhost" or an IP literal the dialer would refuse. It
// catches what a proxy would otherwise hide from the dialer.
func (g *addrGuard) checkURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return refuse("URL scheme refused", "%q", loggable(u))
	}
	port, err := portOf(u)
	if err != nil {
		return refuse("URL refused", "%q: %v", loggable(u), err)
	}
	host := strings.ToLower(u.Hostname())
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil // a name: the dialer checks what it resolves to
	}
	if err := g.allowed("", netip.AddrPortFrom(ip, port)); err != nil {
		return fmt.Errorf("%w (URL %q)", err, loggable(u))
	}
	return nil
}

// guardedTransport checks every request URL with checkURL before passing
// it on; Ping and the token exchange use it too.
type guardedTransport struct {
	inner http.RoundTripper
	g     *addrGuard
}

func (t *guardedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.g.checkURL(req.URL); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return t.inner.RoundTrip(req)
}

// sameOrigin reports whether a and b have the same scheme, host and port.
func sameOrigin(a, b *url.URL) bool {
	pa, errA := portOf(a)
	pb, errB := portOf(b)
	return errA == nil && errB == nil && a.Scheme == b.Scheme && pa == pb &&
		strings.EqualFold(a.Hostname(), b.Hostname())
}

// checkRedirect is the redirect policy: at most maxRedirects hops, http(s)
// only, never from https to http anywhere in the chain, and the
// Authorization header (Basic or Bearer) and Referer are dropped whenever
// the scheme, host or port differs from the original request's. (Go itself
// keeps Authorization when only the port changes.) Blob redirects to a CDN
// thus work, without the registry's credentials.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return refuse("too many redirects", "more than %d, last to %s", maxRedirects, loggable(req.URL))
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return refuse("redirect to a non-HTTP URL refused", "%q", loggable(req.URL))
	}
	if req.URL.Scheme == "http" {
		for _, v := range via {
			if v.URL.Scheme == "https" {
				return refuse("redirect from https to http refused", "%s to %s", loggable(v.URL), loggable(req.URL))
			}
		}
	}
	if !sameOrigin(req.URL, via[0].URL) {
		req.Header.Del("Authorization")
		req.Header.Del("Referer")
	}
	return nil
}

// isRefusal reports whether err is a refusal, which no retry can change.
func isRefusal(err error) bool { return errors.Is(err, ErrRefused) }
