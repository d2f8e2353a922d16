package access

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime"
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
type RateLimitError struct {
	RetryAfter time.Duration
	// failedLogins: refused because the address keeps failing to log in,
	// not for its request rate.
	failedLogins bool
}

func (e *RateLimitError) Error() string {
	why := "over the per-client rate"
	if e.failedLogins {
		why = "too many failed logins from this address"
	}
	return fmt.Sprintf("%v: %s, retry in %v", ErrRateLimited, why, e.RetryAfter.Round(time.Millisecond))
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
	// Anonymous), and failed password verifications per second per address;
	// 0 = no limit. Bursts of one second's worth (at least 1) pass. A
	// request without credentials is not counted: it costs a 401.
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
	// bcryptSlots bounds the bcrypt comparisons running at once, so that
	// a flood of logins from many addresses leaves a core for serving.
	bcryptSlots chan struct{}
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
	c := &Control{opts: opts, log: opts.Logger, admins: map[string]bool{},
		bcryptSlots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)-1))}
	c.creds.key = make([]byte, 32)
	if _, err := rand.Read(c.creds.key); err != nil {
		return nil, err
	}
	c.creds.ttl = opts.CredentialTTL
	c.creds.accepted = map[[32]byte]credEntry{}
	c.creds.refused = map[[32]byte]credEntry{}
	c.creds.flights = map[[32]byte]*credFlight{}
	c.fails.entries = map[string]*failure{}
	c.fails.turnWait = failTurnWait
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
	// The address as a string costs an allocation: made only when a
	// verification, a failure or a per-address rate needs it, not for a
	// login the cache knows.
	var addr string
	addrOf := func() string {
		if addr == "" {
			addr = cl.IP.String()
		}
		return addr
	}
	user, sentPassword := "", false
	var chk credCheck
	if name, password, ok := parseBasic(cl.Authorization); ok && c.users != nil {
		sentPassword = true
		var err error
		if chk, err = c.checkPassword(addrOf, name, password); err != nil {
			return "", err
		}
		if chk.ok {
			user = name
		}
	}
	if user == "" && c.opts.ClientCerts && cl.CertCN != "" && cl.CertCN != Anonymous && cl.CertCN != anyUser && !reservedUsers[cl.CertCN] {
		user = cl.CertCN
	}
	if user == "" && c.trusted(cl.IP) {
		user = Anonymous
	}
	// The failure is counted before the address's turn is given back, so
	// that the next verification from there waits for it. Only a password
	// this request verified counts: one the cache already refused is no
	// new guess (a client repeating a stale password would otherwise put
	// its whole NAT into one-at-a-time checks).
	if sentPassword && chk.turn != nil {
		c.fails.end(chk.turn, addrOf(), user == "", c.opts.Now())
	}
	// An unidentified client is not charged: its 401 is cheap, and Docker
	// clients behind one NAT each knock once before logging in. What it
	// can cost, a failed verification, checkPassword charges.
	if c.limits != nil && user != "" {
		key := "user:" + user
		if user == Anonymous {
			key = "ip:" + addrOf()
		}
		if wait := c.limits.take(key, c.opts.Now()); wait > 0 {
			return user, &RateLimitError{RetryAfter: wait}
		}
	}
	if user == "" {
		if sentPassword {
			return "", fmt.Errorf("%w: wrong user name or password", ErrUnauthenticated)
		}
		return "", fmt.Errorf("%w: log in to this mirror", ErrUnauthenticated)
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

// credCheck is what checking a Basic credential found.
type credCheck struct {
	ok bool
	// turn is the address's verification slot (see failures), held until
	// Identify has counted the failure, if any.
	turn *failure
}

// checkPassword verifies a Basic credential: from the cache when it was
// verified (or refused) lately, by waiting for the verification of the same
// credential already running, else with bcrypt, against a dummy hash for
// an unknown user so that the answer takes as long either way. Before
// bcrypt runs the address must get a turn (see failures) and have a failed
// verification of its rate left; either can refuse it with a
// *RateLimitError. At most cap(bcryptSlots) comparisons run at once; the
// others wait.
func (c *Control) checkPassword(addrOf func() string, user, password string) (credCheck, error) {
	tbl := c.users.table()
	k := c.creds.keyOf(user, password)
	for {
		fl, own, ok, found := c.creds.lookup(k, tbl.gen, c.opts.Now())
		switch {
		case found:
			return credCheck{ok: ok}, nil
		case !own:
			<-fl.done
			if fl.err == nil || fl.addr == addrOf() {
				return credCheck{ok: fl.ok}, fl.err
			}
			// Its verifier was refused for its own address (throttled,
			// over its rate): a request from another address verifies
			// for itself. One from the same address takes the refusal,
			// rather than queue for turns one after another.
			continue
		}
		fl.addr = addrOf()
		chk, err := c.verify(fl.addr, tbl, user, password)
		c.creds.land(k, fl, chk.ok, err, c.opts.Now())
		return chk, err
	}
}

// verify runs bcrypt for addr once it has a turn and its rate allows.
func (c *Control) verify(addr string, tbl *userTable, user, password string) (credCheck, error) {
	var chk credCheck
	turn, wait, err := c.fails.begin(addr, c.opts.Now)
	if err != nil {
		return chk, err
	}
	// Only failed verifications cost the address a request, in a bucket
	// of their own: it cannot guess faster than its rate, while users
	// logging in from one address (NAT, a CI farm) and anonymous pulls do
	// not use up each other's budget. The turn makes the check and the
	// charge below one step once the address is past its free failures.
	if c.limits != nil {
		if due := c.limits.due("fail:"+addr, c.opts.Now()); due > 0 {
			c.fails.end(turn, addr, false, c.opts.Now())
			return chk, &RateLimitError{RetryAfter: due, failedLogins: true}
		}
	}
	chk.turn = turn
	if wait > 0 {
		c.opts.Sleep(wait)
	}
	hash, known := tbl.hashes[user]
	if !known {
		hash = tbl.dummy
	}
	c.bcryptSlots <- struct{}{}
	chk.ok = bcryptMatch(hash, password) && known
	<-c.bcryptSlots
	if !chk.ok && c.limits != nil {
		c.limits.charge("fail:"+addr, c.opts.Now())
	}
	return chk, nil
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

// failures counts failed logins per address and hands out the address's
// turns to verify a password. An address without failures within
// failWindow verifies up to freshParallel at once (a NAT's users logging
// in together). Once it has failed, those in flight count as failures to
// be, so that parallel connections cannot slip under the threshold:
// failFree at once; past
// failFree failures, one at a time, each after a wait doubling from
// failBase up to failMaxDelay. A request that finds no turn free waits for
// one to come back rather than being refused, so that users sharing the
// address with a guesser still get in; only after turnWait is it refused.
type failures struct {
	mu       sync.Mutex
	entries  map[string]*failure
	turnWait time.Duration
	// onWait, when set, is told each time a request starts waiting for a
	// turn; tests synchronise on it.
	onWait func()
}

type failure struct {
	n         int // failed logins, the last at last
	last      time.Time
	verifying int // turns out
	// freed, when not nil, is closed when a turn comes back; those waiting
	// for one select on it.
	freed chan struct{}
}

const (
	failFree     = 5
	failWindow   = 5 * time.Minute
	failBase     = 100 * time.Millisecond
	failMaxDelay = 5 * time.Second
	// freshParallel is how many verifications an address without
	// failures runs at once: a NAT's users logging in together, and at
	// most that many guesses before the first failure counts.
	freshParallel = 16
	// failTurnWait bounds how long a request waits for its address's
	// turn: enough for the holder's longest back-off and its bcrypt.
	failTurnWait = failMaxDelay + 5*time.Second
	maxFailAddrs = 10000
)

// begin takes a turn for addr, waiting for one to come back when none is
// free: how long to wait before verifying, and the turn to give back to
// end; a *RateLimitError when none came back within turnWait.
func (f *failures) begin(addr string, now func() time.Time) (*failure, time.Duration, error) {
	var timeout <-chan time.Time
	for {
		turn, wait, freed := f.take(addr, now())
		if freed == nil {
			return turn, wait, nil
		}
		if f.onWait != nil {
			f.onWait()
		}
		if timeout == nil {
			t := time.NewTimer(f.turnWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-freed:
		case <-timeout:
			return nil, 0, &RateLimitError{RetryAfter: wait, failedLogins: true}
		}
	}
}

// take is begin's one attempt: the turn and wait, or, when no turn is
// free, the channel closed when one comes back (and the wait it would
// have).
func (f *failures) take(addr string, now time.Time) (*failure, time.Duration, chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.entry(addr, now)
	if e == nil {
		return nil, 0, nil // under attack from many addresses: each still pays bcrypt
	}
	// Below the threshold, verifications go at once up to a limit: a
	// fresh address's (freshParallel) lets a NAT's users log in together,
	// then those in flight count as failures to be, so that parallel
	// connections cannot slip under the threshold. A request over the
	// limit waits for a turn to come back. Past the threshold: one at a
	// time, each after its back-off.
	limit := failFree - e.n
	if e.n == 0 {
		limit = freshParallel
	}
	var wait time.Duration
	if limit <= 0 {
		limit, wait = 1, min(failBase<<min(e.n-failFree, 16), failMaxDelay)
	}
	if e.verifying < limit {
		e.verifying++
		return e, wait, nil
	}
	if e.freed == nil {
		e.freed = make(chan struct{})
	}
	return nil, max(wait, failBase), e.freed
}

// end gives back turn (nil: none was taken) and counts a failed login.
func (f *failures) end(turn *failure, addr string, failed bool, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if turn != nil {
		turn.verifying-- // entries with turns out are never dropped: turn is addr's
		if turn.freed != nil {
			close(turn.freed)
			turn.freed = nil
		}
	}
	if !failed {
		return
	}
	if e := f.entry(addr, now); e != nil {
		e.n++
		e.last = now
	}
}

// entry is addr's record, its failures forgotten once failWindow old; nil
// when too many addresses have one.
func (f *failures) entry(addr string, now time.Time) *failure {
	e := f.entries[addr]
	if e == nil {
		if len(f.entries) >= maxFailAddrs {
			for k, old := range f.entries {
				if old.verifying == 0 && (old.n == 0 || now.Sub(old.last) > failWindow) {
					delete(f.entries, k)
				}
			}
			if len(f.entries) >= maxFailAddrs {
				return nil
			}
		}
		e = &failure{}
		f.entries[addr] = e
	}
	if now.Sub(e.last) > failWindow {
		e.n = 0
	}
	return e
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
	e := l.entry(key, now)
	if e.AllowN(now, 1) {
		return 0
	}
	r := e.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	r.CancelAt(now)
	return max(wait, time.Millisecond)
}

// due is how long until key may spend a request (0: now), spending none.
func (l *limiters) due(key string, now time.Time) time.Duration {
	tokens := l.entry(key, now).TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return max(time.Duration((1-tokens)/float64(l.limit)*float64(time.Second)), time.Millisecond)
}

// charge spends one request of key's budget, running into debt (a longer
// wait for its next ones) when there is none left.
func (l *limiters) charge(key string, now time.Time) {
	l.entry(key, now).ReserveN(now, 1)
}

func (l *limiters) entry(key string, now time.Time) *rate.Limiter {
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
	return e.lim
}
