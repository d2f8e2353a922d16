package access

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Anonymous is the user a trusted-network client is without logging in.
const Anonymous = "anonymous"

// anyUser in a rule's users means every identified user but Anonymous.
const anyUser = "*"

// reservedUsers are the identities the proxy gives its own requests
// (proxy/access.go internalUser: loopback requests with the internal
// token; proxy/peer.go peerUser: signed requests from cluster peers), which
// it lets see and pull everything. No htpasswd entry, certificate or rule
// may claim them.
var reservedUsers = map[string]bool{"regmirror": true, "regmirror-peer": true}

// Errors the proxy maps to registry wire codes.
var (
	// ErrUnauthenticated: no acceptable identity (401 UNAUTHORIZED).
	ErrUnauthenticated = errors.New("authentication required")
	// ErrDenied: the identity may not pull this repository (403 DENIED).
	ErrDenied = errors.New("access denied")
	// ErrRateLimited: the client is over its request rate (429
	// TOOMANYREQUESTS); the error is a *RateLimitError.
	ErrRateLimited = errors.New("too many requests")
)

// RateLimitError says when the client may try again.
type RateLimitError struct{ RetryAfter time.Duration }

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("%v: over the per-client rate, retry in %v", ErrRateLimited, e.RetryAfter.Round(time.Millisecond))
}

func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

// Rule is one [[auth.rule]]: for the users it names, which
// registry/repository globs are allowed and denied.
type Rule struct {
	Users []string
	Allow []string
	Deny  []string
}

// Options configures access control. Zero values take the defaults named.
type Options struct {
	// HtpasswdFile holds bcrypt `user:hash` lines; empty: no passwords.
	HtpasswdFile string
	// TrustedNetworks are CIDRs (or single addresses) whose clients are
	// Anonymous without logging in.
	TrustedNetworks []string
	// ClientCerts says that the server verifies client certificates (a
	// client CA is configured): a verified certificate's CN is a user. Rule
	// users absent from the htpasswd file are then only warned about, as
	// they may be certificate names.
	ClientCerts bool
	// Admins may use the management API remotely.
	Admins []string
	// RatePerClient is requests per second per user (per address for
	// Anonymous and unidentified clients); 0 = no limit. Bursts of one
	// second's worth (at least 1) pass.
	RatePerClient float64
	// Rules, in order; see the package documentation.
	Rules []Rule
	// CredentialTTL is how long a verified credential is trusted without
	// running bcrypt again. Default 1m.
	CredentialTTL time.Duration
	Logger        *slog.Logger
	// Now is the clock and Sleep the wait imposed on addresses that keep
	// failing; tests replace them.
	Now   func() time.Time
	Sleep func(time.Duration)
}

// Client is what the proxy knows of a request's sender.
type Client struct {
	IP net.IP
	// Authorization is the request's Authorization header as sent.
	Authorization string
	// CertCN is the Common Name of the client certificate the TLS layer
	// verified against the client CA; empty without one.
	CertCN string
}

// Control answers who a client is and what it may pull. It is safe for
// concurrent use.
type Control struct {
	opts     Options
	log      *slog.Logger
	users    *htpasswd // nil without a file
	creds    credCache
	networks []*net.IPNet
	admins   map[string]bool
	rules    []rule
	fails    failures
	limits   *limiters // nil without a rate
}

type rule struct {
	users       map[string]bool
	allow, deny []Glob
}

// New checks opts and builds a Control. Every mistake is reported (joined),
// each naming where it is: a malformed CIDR or glob, a rule user that no
// htpasswd line defines, an htpasswd line that is not bcrypt.
func New(opts Options) (*Control, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = time.Sleep
	}
	if opts.CredentialTTL <= 0 {
		opts.CredentialTTL = time.Minute
	}
	c := &Control{opts: opts, log: opts.Logger, admins: map[string]bool{}}
	c.creds.key = make([]byte, 32)
	if _, err := rand.Read(c.creds.key); err != nil {
		return nil, err
	}
	c.creds.ttl = opts.CredentialTTL
	c.creds.accepted = map[[32]byte]credEntry{}
	c.creds.refused = map[[32]byte]credEntry{}
	c.fails.entries = map[string]*failure{}
	var errs []error
	if opts.HtpasswdFile != "" {
		h, err := openHtpasswd(opts.HtpasswdFile, opts.Now)
		if err != nil {
			errs = append(errs, err)
		} else {
			h.onReload = func(users int, err error) {
				if err != nil {
					c.log.Error("htpasswd file not reloaded; keeping the previous users", "err", err)
					return
				}
				c.log.Info("htpasswd file reloaded", "users", users)
			}
			c.users = h
		}
	}
	for i, s := range opts.TrustedNetworks {
		n, err := parseNetwork(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("auth.trusted_networks[%d] %q: %v", i, s, err))
			continue
		}
		c.networks = append(c.networks, n)
	}
	if c.users == nil && len(c.networks) == 0 && !opts.ClientCerts && len(errs) == 0 {
		errs = append(errs, errors.New("auth: nobody can be identified: set htpasswd_file, trusted_networks or client_ca_file"))
	}
	known := func(user string) bool {
		return c.users != nil && c.users.tbl.hashes[user] != nil
	}
	checkUser := func(where, user string) {
		switch {
		case user == "":
			errs = append(errs, fmt.Errorf("%s: empty user name", where))
		case reservedUsers[user]:
			errs = append(errs, fmt.Errorf("%s: %q is reserved for the mirror's own requests", where, user))
		case user == Anonymous || user == anyUser || known(user):
		case opts.ClientCerts:
			c.log.Warn("auth: user is not in the htpasswd file; only a client certificate with this CN can be it", "where", where, "user", user)
		default:
			errs = append(errs, fmt.Errorf("%s: unknown user %q (not in htpasswd_file, not \"anonymous\" or \"*\")", where, user))
		}
	}
	for i, a := range opts.Admins {
		if a == Anonymous || a == anyUser {
			errs = append(errs, fmt.Errorf("auth.admins[%d]: %q cannot be an admin", i, a))
			continue
		}
		checkUser(fmt.Sprintf("auth.admins[%d]", i), a)
		c.admins[a] = true
	}
	for i, r := range opts.Rules {
		where := fmt.Sprintf("auth.rule[%d]", i)
		cr := rule{users: map[string]bool{}}
		if len(r.Users) == 0 {
			errs = append(errs, fmt.Errorf("%s: names no users", where))
		}
		for j, u := range r.Users {
			checkUser(fmt.Sprintf("%s.users[%d]", where, j), u)
			cr.users[u] = true
		}
		for j, p := range r.Allow {
			g, err := CompileGlob(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.allow[%d]: %w", where, j, err))
			}
			cr.allow = append(cr.allow, g)
		}
		for j, p := range r.Deny {
			g, err := CompileGlob(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.deny[%d]: %w", where, j, err))
			}
			cr.deny = append(cr.deny, g)
		}
		c.rules = append(c.rules, cr)
	}
	switch {
	case opts.RatePerClient < 0 || math.IsNaN(opts.RatePerClient) || math.IsInf(opts.RatePerClient, 0):
		errs = append(errs, fmt.Errorf("auth.rate_per_client: %v: want a number of requests per second, 0 for no limit", opts.RatePerClient))
	case opts.RatePerClient > 0:
		c.limits = newLimiters(opts.RatePerClient)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

func parseNetwork(s string) (*net.IPNet, error) {
	if strings.Contains(s, "/") {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, errors.New("not a CIDR such as 10.0.0.0/8")
		}
		return n, nil
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, errors.New("not a CIDR such as 10.0.0.0/8 or an address")
	}
	bits := 128
	if ip4 := ip.To4(); ip4 != nil {
		ip, bits = ip4, 32
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, nil
}

// Identify says who the client is: a user name, or Anonymous. It fails
// with ErrUnauthenticated or ErrRateLimited.
func (c *Control) Identify(cl Client) (string, error) {
	user, sentPassword := "", false
	if name, password, ok := parseBasic(cl.Authorization); ok && c.users != nil {
		sentPassword = true
		if c.checkPassword(cl.IP, name, password) {
			user = name
		}
	}
	if user == "" && c.opts.ClientCerts && cl.CertCN != "" && cl.CertCN != Anonymous && cl.CertCN != anyUser && !reservedUsers[cl.CertCN] {
		user = cl.CertCN
	}
	if user == "" && c.trusted(cl.IP) {
		user = Anonymous
	}
	if user == "" {
		if sentPassword {
			c.fails.add(cl.IP.String(), c.opts.Now())
			return "", fmt.Errorf("%w: wrong user name or password", ErrUnauthenticated)
		}
		return "", fmt.Errorf("%w: log in to this mirror", ErrUnauthenticated)
	}
	if c.limits != nil {
		key := "user:" + user
		if user == Anonymous {
			key = "ip:" + cl.IP.String()
		}
		if wait := c.limits.take(key, c.opts.Now()); wait > 0 {
			return user, &RateLimitError{RetryAfter: wait}
		}
	}
	return user, nil
}

// Authorize identifies the client and checks that it may pull
// registry/repo; it fails with ErrUnauthenticated, ErrRateLimited or
// ErrDenied. The user is returned whenever it is known.
func (c *Control) Authorize(cl Client, registry, repo string) (string, error) {
	user, err := c.Identify(cl)
	if err != nil {
		return user, err
	}
	if !c.May(user, registry, repo) {
		return user, fmt.Errorf("%w: %s may not pull %s/%s", ErrDenied, user, registry, repo)
	}
	return user, nil
}

// May reports whether user (a name, or Anonymous) may pull registry/repo
// by the rules; with repo "", whether an allow glob of the rule that
// decides for user can match something in registry. It does no
// identification: the status page and the catalog ask it for names they
// list.
func (c *Control) May(user, registry, repo string) bool {
	if repo == "" {
		return c.mayRegistry(user, registry)
	}
	name := registry + "/" + repo
	for _, r := range c.rules {
		if !r.users[user] && !(r.users[anyUser] && user != Anonymous) {
			continue
		}
		for _, g := range r.deny {
			if g.Match(name) {
				return false
			}
		}
		for _, g := range r.allow {
			if g.Match(name) {
				return true
			}
		}
		return false
	}
	return false
}

func (c *Control) mayRegistry(user, registry string) bool {
	for _, r := range c.rules {
		if !r.users[user] && !(r.users[anyUser] && user != Anonymous) {
			continue
		}
		for _, g := range r.allow {
			first, _, _ := strings.Cut(g.pattern, "/")
			if strings.HasPrefix(first, "**") {
				return true
			}
			if ok, err := MatchPattern(first, registry); err == nil && ok {
				return true
			}
		}
		return false
	}
	return false
}

// IsAdmin reports whether user may use the management API remotely.
func (c *Control) IsAdmin(user string) bool { return user != Anonymous && c.admins[user] }

func (c *Control) trusted(ip net.IP) bool {
	if ip == nil {
		return false
	}
	for _, n := range c.networks {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// checkPassword verifies a Basic credential: from the cache when it was
// verified (or refused) lately, else with bcrypt, against a dummy hash for
// an unknown user so that the answer takes as long either way.
func (c *Control) checkPassword(ip net.IP, user, password string) bool {
	tbl := c.users.table()
	now := c.opts.Now()
	k := c.creds.keyOf(user, password)
	if ok, found := c.creds.get(k, tbl.gen, now); found {
		return ok
	}
	if d := c.fails.delay(ip.String(), now); d > 0 {
		c.opts.Sleep(d)
	}
	hash, known := tbl.hashes[user]
	if !known {
		hash = tbl.dummy
	}
	ok := bcryptMatch(hash, password) && known
	c.creds.put(k, ok, tbl.gen, now)
	return ok
}

// parseBasic reads an HTTP Basic Authorization header.
func parseBasic(h string) (user, password string, ok bool) {
	const prefix = "basic "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", "", false
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(h[len(prefix):]))
	if err != nil {
		return "", "", false
	}
	user, password, ok = strings.Cut(string(b), ":")
	return user, password, ok && user != ""
}

// failures counts failed logins per address; past failFree of them within
// failWindow, each further verification from there waits, doubling up to
// failMaxDelay.
type failures struct {
	mu      sync.Mutex
	entries map[string]*failure
}

type failure struct {
	n    int
	last time.Time
}

const (
	failFree     = 5
	failWindow   = 5 * time.Minute
	failBase     = 100 * time.Millisecond
	failMaxDelay = 5 * time.Second
	maxFailAddrs = 10000
)

func (f *failures) add(addr string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.entries[addr]
	if e == nil || now.Sub(e.last) > failWindow {
		if len(f.entries) >= maxFailAddrs {
			for k, old := range f.entries {
				if now.Sub(old.last) > failWindow {
					delete(f.entries, k)
				}
			}
			if len(f.entries) >= maxFailAddrs {
				return // under attack from many addresses: each still pays bcrypt
			}
		}
		e = &failure{}
		f.entries[addr] = e
	}
	e.n++
	e.last = now
}

func (f *failures) delay(addr string, now time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.entries[addr]
	if e == nil || now.Sub(e.last) > failWindow || e.n < failFree {
		return 0
	}
	shift := min(e.n-failFree, 16)
	return min(failBase<<shift, failMaxDelay)
}

// limiters holds one token bucket per client key, forgetting clients idle
// for limiterIdle once there are many.
type limiters struct {
	mu      sync.Mutex
	limit   rate.Limit
	burst   int
	entries map[string]*limiter
}

type limiter struct {
	lim  *rate.Limiter
	seen time.Time
}

const (
	maxLimiters = 10000
	limiterIdle = 10 * time.Minute
)

func newLimiters(perSecond float64) *limiters {
	return &limiters{limit: rate.Limit(perSecond), burst: max(1, int(math.Ceil(perSecond))), entries: map[string]*limiter{}}
}

// take spends one request of key's budget; it returns 0 when allowed, else
// how long until the next request would be.
func (l *limiters) take(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entries[key]
	if e == nil {
		if len(l.entries) >= maxLimiters {
			for k, old := range l.entries {
				if now.Sub(old.seen) > limiterIdle {
					delete(l.entries, k)
				}
			}
			if len(l.entries) >= maxLimiters {
				clear(l.entries)
			}
		}
		e = &limiter{lim: rate.NewLimiter(l.limit, l.burst)}
		l.entries[key] = e
	}
	e.seen = now
	if e.lim.AllowN(now, 1) {
		return 0
	}
	r := e.lim.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	r.CancelAt(now)
	return max(wait, time.Millisecond)
}
