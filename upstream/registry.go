package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	"github.com/regmirror/regmirror/imageref"
)

// Defaults for Options fields left zero.
const (
	DefaultDockerHubURL    = "https://registry-1.docker.io"
	DefaultDialTimeout     = 10 * time.Second
	DefaultResponseTimeout = 30 * time.Second
	DefaultStallTimeout    = 60 * time.Second
	DefaultRetries         = 3
	DefaultRetryBackoff    = 200 * time.Millisecond
	DefaultMaxManifestSize = 4 << 20
	maxTagListSize         = 4 << 20
	maxTokenScopes         = 1024
)

// Options configures a Registry. Zero fields take the documented defaults.
type Options struct {
	// Name is the registry as clients name it: "docker.io", "ghcr.io",
	// "registry.corp:5000". Required.
	Name string
	// URL is where it is reached: "https://registry-1.docker.io" (the default
	// for docker.io; "https://<Name>" otherwise) or "http://127.0.0.1:1234".
	// No path, query or user info.
	URL string
	// Username and Password are optional; anonymous otherwise.
	Username, Password string
	// Keychain supplies credentials when Username and Password are empty:
	// it is asked for Name ("ghcr.io"; Docker Hub as "index.docker.io") when
	// a token is first needed and every few minutes after. NewConfigKeychain
	// reads a Docker config.json with its credential helpers. Nil: anonymous.
	Keychain authn.Keychain
	// InsecureSkipVerify turns off TLS verification; CAFile adds PEM CA
	// certificates to the system pool.
	InsecureSkipVerify bool
	CAFile             string
	// DialTimeout bounds connecting (default 10s).
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for response headers (default 30s).
	ResponseHeaderTimeout time.Duration
	// StallTimeout fails a body read that makes no progress for this long
	// with ErrUnavailable (default 60s).
	StallTimeout time.Duration
	// Retries is how many times an idempotent request is retried after a
	// connection error or a 5xx (default 3; negative: never).
	Retries int
	// RetryBackoff is the first retry's delay, doubled for each next one,
	// with ±50% jitter (default 200ms).
	RetryBackoff time.Duration
	// MaxManifestSize caps manifest bodies (default 4 MiB).
	MaxManifestSize int64
	// UserAgent is sent with every request if set.
	UserAgent string
	// Logger receives upstream events (default: discarded).
	Logger *slog.Logger
	// AllowPrivateAddresses lets this registry's connections reach these
	// loopback, link-local, private or other special-purpose prefixes (any
	// port) besides its own endpoint, which is always allowed: e.g. a token
	// server or blob store on another host or port of the LAN. See addrGuard.
	AllowPrivateAddresses []netip.Prefix
	// Now is the clock of token lifetimes, credential refreshes, rate-limit
	// figures and Retry-After dates (default time.Now; tests step it).
	// Timeouts and retry backoff run on real timers.
	Now func() time.Time
	// Transport replaces the HTTP transport (tests); DialTimeout,
	// ResponseHeaderTimeout, the TLS options and the dialer's address guard
	// are then not applied (the URL checks and the redirect policy are).
	Transport http.RoundTripper
}

// Registry is one configured upstream registry. It is safe for concurrent
// use; keep one per upstream for the process's life so that connections and
// tokens are reused.
type Registry struct {
	opts      Options
	scheme    string // of every request URL: "http" or "https"
	reg       name.Registry
	auth      authn.Authenticator
	addrs     *addrGuard
	rt        http.RoundTripper
	client    *http.Client
	log       *slog.Logger
	dockerHub bool

	pinger  lock // serializes pings
	mu      sync.Mutex
	ch      *transport.Challenge // nil until pinged, and after an auth error
	tokens  *tokenCache
	retries int
	stats   stats

	afterFunc func(time.Duration, func()) stallTimer // realAfterFunc; tests fire stalls by hand
}

// New validates o and returns a Registry. It does no network I/O.
func New(o Options) (*Registry, error) {
	if o.Name == "" {
		return nil, errors.New("upstream: Options.Name is required")
	}
	dockerHub := imageref.IsDockerHub(o.Name)
	o, retries := withDefaults(o, dockerHub)
	u, reg, err := ParseBaseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", o.Name, err)
	}
	g, err := newAddrGuard(u, o.AllowPrivateAddresses)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: URL %q: %w", o.Name, o.URL, err)
	}
	rt, err := roundTripper(o, g)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", o.Name, err)
	}
	auth, err := authenticator(o)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", o.Name, err)
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{
		opts:      o,
		scheme:    u.Scheme,
		reg:       reg,
		auth:      auth,
		addrs:     g,
		rt:        rt,
		client:    &http.Client{Transport: rt, CheckRedirect: checkRedirect},
		log:       logger.With("upstream", o.Name),
		dockerHub: dockerHub,
		pinger:    newLock(),
		tokens:    newTokenCache(maxTokenScopes),
		retries:   retries,
		afterFunc: realAfterFunc,
	}, nil
}

// withDefaults fills o's zero fields with the documented defaults and
// returns the number of retries (Options.Retries: 0 is the default,
// negative is none).
func withDefaults(o Options, dockerHub bool) (Options, int) {
	if o.URL == "" {
		if dockerHub {
			o.URL = DefaultDockerHubURL
		} else {
			o.URL = "https://" + o.Name
		}
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.ResponseHeaderTimeout <= 0 {
		o.ResponseHeaderTimeout = DefaultResponseTimeout
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	retries := o.Retries
	if retries == 0 {
		retries = DefaultRetries
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = DefaultRetryBackoff
	}
	if o.MaxManifestSize <= 0 {
		o.MaxManifestSize = DefaultMaxManifestSize
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, max(retries, 0)
}

// ParseBaseURL accepts a registry's address as an operator writes it,
// http(s)://host[:port] with nothing after it, and returns it with the
// registry it addresses (insecure for http). Registries, their mirrors
// and push-to's target all go through it.
func ParseBaseURL(raw string) (*url.URL, name.Registry, error) {
	u, err := CheckBaseURL(raw)
	if err != nil {
		return nil, name.Registry{}, err
	}
	var nopts []name.Option
	if u.Scheme == "http" {
		nopts = append(nopts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, nopts...)
	if err != nil {
		return nil, name.Registry{}, fmt.Errorf("URL host %q: %w", u.Host, err)
	}
	return u, reg, nil
}

// CheckBaseURL accepts a service's base address as an operator writes
// it: http(s)://host[:port] with nothing after it (no user, path, query
// or fragment). Registries, mirrors, push-to's target, cluster peers and
// the S3 endpoint all go through it.
func CheckBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("URL %q: want http(s)://host[:port] with nothing after it", raw)
	}
	return u, nil
}

// roundTripper is the registry's HTTP stack: o.Transport or a new guarded
// transport, the address guard on every request, the user agent.
func roundTripper(o Options, g *addrGuard) (http.RoundTripper, error) {
	rt := o.Transport
	if rt == nil {
		tr, err := newTransport(o, g)
		if err != nil {
			return nil, err
		}
		rt = tr
	}
	rt = &guardedTransport{inner: rt, g: g}
	if o.UserAgent != "" {
		rt = &userAgent{inner: rt, ua: o.UserAgent}
	}
	return rt, nil
}

// authenticator is where credentials come from: the configured username
// and password, else the keychain (asked for Docker Hub's key under any of
// its aliases), else none.
func authenticator(o Options) (authn.Authenticator, error) {
	switch {
	case o.Username != "" || o.Password != "":
		return authn.FromConfig(authn.AuthConfig{Username: o.Username, Password: o.Password}), nil
	case o.Keychain != nil:
		target, err := name.NewRegistry(imageref.CanonicalRegistry(o.Name))
		if err != nil {
			return nil, fmt.Errorf("name: %w", err)
		}
		return &keychainAuth{kc: o.Keychain, target: target, now: o.Now}, nil
	}
	return authn.Anonymous, nil
}

// TLSConfig trusts the system's CAs plus those in caFile (PEM), if given;
// insecure skips verification (an operator's explicit choice). The
// registry client, push-to and the cluster's peer client all use it.
func TLSConfig(caFile string, insecure bool) (*tls.Config, error) {
	conf := &tls.Config{InsecureSkipVerify: insecure} //nolint:gosec // opt-in by configuration
	if caFile == "" {
		return conf, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificates", caFile)
	}
	conf.RootCAs = pool
	return conf, nil
}

func newTransport(o Options, g *addrGuard) (*http.Transport, error) {
	tlsConf, err := TLSConfig(o.CAFile, o.InsecureSkipVerify)
	if err != nil {
		return nil, err
	}
	return &http.Transport{
		Proxy:                 g.proxy,
		DialContext:           g.dialContext(o.DialTimeout),
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   o.DialTimeout,
		ResponseHeaderTimeout: o.ResponseHeaderTimeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Blobs must arrive exactly as stored: no transparent gzip.
		DisableCompression: true,
	}, nil
}

type userAgent struct {
	inner http.RoundTripper
	ua    string
}

func (u *userAgent) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("User-Agent", u.ua)
	return u.inner.RoundTrip(req)
}

// Name is the registry's name as configured (Options.Name).
func (r *Registry) Name() string { return r.opts.Name }

// Repository applies Docker Hub defaulting (imageref.DefaultRepository): on
// Docker Hub a single-component name gets "library/" ("alpine" →
// "library/alpine"); other registries' names are unchanged.
func (r *Registry) Repository(repo string) string {
	if r.dockerHub {
		return imageref.DefaultRepository(imageref.DockerHub, repo)
	}
	return repo
}

// Descriptor describes a manifest as the upstream answered it.
type Descriptor struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
}

// checkRepo validates (imageref's grammar) and defaults repo.
func (r *Registry) checkRepo(repo string) (string, error) {
	repo = r.Repository(repo)
	if !imageref.ValidRepository(repo) {
		return "", fmt.Errorf("%w: repository %q", ErrInvalidName, repo)
	}
	return repo, nil
}

// checkRef validates a tag or digest reference; d is set for a digest. A
// digest of any algorithm go-digest knows is accepted here; the proxy is
// what narrows to sha256 (imageref.CheckDigest).
func checkRef(ref string) (d digest.Digest, err error) {
	if strings.Contains(ref, ":") {
		d, err := digest.Parse(ref)
		if err != nil {
			return "", fmt.Errorf("%w: reference %q: %v", ErrInvalidName, ref, err)
		}
		return d, nil
	}
	if !imageref.ValidTag(ref) {
		return "", fmt.Errorf("%w: tag %q", ErrInvalidName, ref)
	}
	return "", nil
}

// DigestRef is a manifest reference as a digest, or "" for a tag (or
// anything checkRef refuses).
func DigestRef(ref string) digest.Digest {
	d, _ := checkRef(ref)
	return d
}

// retry runs op up to 1+Retries times while it fails with a retryable error,
// sleeping an exponential backoff with jitter in between.
func (r *Registry) retry(ctx context.Context, what string, op func() error) error {
	backoff := r.opts.RetryBackoff
	for attempt := 0; ; attempt++ {
		err := op()
		if err == nil || attempt >= r.retries || !retryable(ctx, err) {
			return err
		}
		d := backoff/2 + rand.N(backoff+1)
		r.log.Info("upstream request failed, retrying", "what", what, "attempt", attempt+1, "in_s", d.Seconds(), "err", err)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		backoff *= 2
	}
}

// request describes one registry request.
type request struct {
	method string
	repo   string // validated
	path   string // after /v2/<repo>/
	query  string
	header http.Header
}

// do sends req with authentication and retries, re-authenticating once on a
// 401. The response may have any status below 500; the caller checks it and
// closes the body.
func (r *Registry) do(ctx context.Context, req request) (*http.Response, error) {
	scope := "repository:" + req.repo + ":pull"
	u := url.URL{Scheme: r.scheme, Host: r.reg.RegistryStr(), Path: "/v2/" + req.repo + "/" + req.path, RawQuery: req.query}
	what := req.method + " " + u.Path
	var stale string
	for attempt := 0; ; attempt++ {
		authz, err := r.authorization(ctx, scope, stale)
		if err != nil {
			return nil, err
		}
		var resp *http.Response
		err = r.retry(ctx, what, func() (err error) {
			resp, err = r.send(ctx, req, u.String(), authz)
			return err
		})
		if err != nil {
			if isRefusal(err) {
				r.log.Warn("upstream request refused by the mirror's upstream rules", "what", what, "err", err)
			}
			return nil, classify(ctx, what, err)
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			drain(resp)
			r.log.Debug("upstream answered 401; re-authenticating", "what", what)
			r.forget()
			stale = authz
			continue
		}
		r.stats.sawResponse(resp.Header, r.opts.Now())
		if resp.StatusCode == http.StatusTooManyRequests {
			r.log.Info("upstream rate limited", "what", what, "retry_after", resp.Header.Get("Retry-After"))
		}
		return resp, nil
	}
}

// send makes one attempt at req: a 5xx answer is drained and returned as
// its classified error, so that retry can decide on it.
func (r *Registry) send(ctx context.Context, req request, u, authz string) (*http.Response, error) {
	hr, err := http.NewRequestWithContext(ctx, req.method, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range req.header {
		hr.Header[k] = v
	}
	if authz != "" {
		hr.Header.Set("Authorization", authz)
	}
	resp, err := r.client.Do(hr)
	if err != nil {
		return nil, withoutQuery(err)
	}
	if resp.StatusCode >= 500 {
		err := r.checkResponse(resp)
		drain(resp)
		return nil, err
	}
	return resp, nil
}

// drain reads a little of an unwanted body, so the connection can be
// reused, and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
