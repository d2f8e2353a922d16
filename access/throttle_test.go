package access

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regmirror/regmirror/internal/testclock"
)

// gatedCompares makes bcrypt comparisons of passwords starting with
// "held" wait for release (each announced on entered); others run as usual.
// It counts every comparison.
func gatedCompares(t *testing.T) (n *atomic.Int64, entered chan struct{}, release func()) {
	n = new(atomic.Int64)
	entered, gate := make(chan struct{}, 1000), make(chan struct{})
	orig := compareHash
	compareHash = func(h, p []byte) error {
		n.Add(1)
		if strings.HasPrefix(string(p), "held") {
			entered <- struct{}{}
			<-gate
		}
		return orig(h, p)
	}
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(func() { release(); compareHash = orig })
	return n, entered, release
}

func isFailedLoginRefusal(err error) bool {
	var rl *RateLimitError
	return errors.As(err, &rl) && rl.failedLogins && rl.RetryAfter > 0
}

// overlappingCompares tracks the most bcrypt comparisons running at once.
func overlappingCompares(t *testing.T) *atomic.Int64 {
	var now, most atomic.Int64
	orig := compareHash
	compareHash = func(h, p []byte) error {
		n := now.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		defer now.Add(-1)
		return orig(h, p)
	}
	t.Cleanup(func() { compareHash = orig })
	return &most
}

// countWaits counts the requests that start waiting for their address's
// turn, closing all once there have been want.
func countWaits(c *Control, want int32) (all chan struct{}) {
	var n atomic.Int32
	all = make(chan struct{})
	c.fails.onWait = func() {
		if n.Add(1) == want {
			close(all)
		}
	}
	return all
}

// Past the free failures an address gets one verification at a time, each
// after its back-off: parallel connections from it wait for the turn
// rather than all running bcrypt together, and rather than being refused,
// so that a user sharing the address with a guesser still gets in.
func TestFailedLoginsOneVerificationPerAddress(t *testing.T) {
	n := countCompares(t)
	most := overlappingCompares(t)
	clk := testclock.New()
	var sleeps atomic.Int32
	asleep, wake := make(chan struct{}), make(chan struct{})
	c, err := New(Options{HtpasswdFile: writeHtpasswd(t, "ci", "cipw", "bob", "bobpw"), Now: clk.Now,
		Sleep: func(time.Duration) {
			if sleeps.Add(1) == 1 {
				close(asleep)
				<-wake
			}
		},
		Rules: []Rule{{Users: []string{"ci", "bob"}, Allow: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
	c.bcryptSlots = make(chan struct{}, 64) // any overlap would be the address's, not the global cap's
	const parallel = 50
	waiting := countWaits(c, parallel+1)
	attacker := net.ParseIP("203.0.113.66")
	if _, err := c.Identify(Client{IP: attacker, Authorization: basic("ci", "cipw")}); err != nil {
		t.Fatal(err) // ci logs in before the attack: cached from here on
	}
	failLogins(c, attacker)
	first := identifyAsync(c, attacker, "guess-first")
	<-asleep // the address's turn is out, waiting its back-off
	// Each of the parallel requests, and bob's, says when it is answered.
	done := make(chan error, parallel+1)
	for i := range parallel {
		go func() {
			_, err := c.Identify(Client{IP: attacker, Authorization: basic("ci", fmt.Sprint("parallel", i))})
			if !errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrRateLimited) {
				err = fmt.Errorf("parallel guess %d: %v, want ErrUnauthenticated after its turn", i, err)
			} else {
				err = nil
			}
			done <- err
		}()
	}
	// A correct password not yet verified waits its turn too.
	go func() {
		u, err := c.Identify(Client{IP: attacker, Authorization: basic("bob", "bobpw")})
		if err != nil || u != "bob" {
			err = fmt.Errorf("bob's login from the address, waiting its turn: %q, %v", u, err)
		}
		done <- err
	}()
	select {
	case <-waiting:
	case err := <-done:
		t.Fatalf("a request was answered while the address's turn was out: %v", err)
	}
	// ci's cached credential is not held up.
	if u, err := c.Identify(Client{IP: attacker, Authorization: basic("ci", "cipw")}); err != nil || u != "ci" {
		t.Errorf("a cached credential from the address: %q, %v", u, err)
	}
	if got, want := n.Load(), int64(1+failFree); got != want {
		t.Errorf("bcrypt ran %d times while the turn was out, want %d (the login and the free failures)", got, want)
	}
	close(wake)
	if err := <-first; !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("the guess that had the turn: %v, want ErrUnauthenticated", err)
	}
	for range parallel + 1 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if got := most.Load(); got != 1 {
		t.Errorf("%d verifications from the address ran at once, want 1", got)
	}
	if got, want := n.Load(), int64(1+failFree+1+parallel+1); got != want {
		t.Errorf("bcrypt ran %d times, want %d (one per credential)", got, want)
	}
	if got, want := sleeps.Load(), int32(1+parallel+1); got != want {
		t.Errorf("%d verifications waited a back-off, want %d (every one past the free failures)", got, want)
	}
}

// A request that cannot get its address's turn within turnWait is refused
// with a retry time, without running bcrypt.
func TestFailedLoginTurnWaitBounded(t *testing.T) {
	n := countCompares(t)
	clk := testclock.New()
	var sleeps atomic.Int32
	asleep, wake := make(chan struct{}), make(chan struct{})
	c, err := New(Options{HtpasswdFile: writeHtpasswd(t, "ci", "cipw"), Now: clk.Now,
		Sleep: func(time.Duration) {
			if sleeps.Add(1) == 1 {
				close(asleep)
				<-wake
			}
		},
		Rules: []Rule{{Users: []string{"ci"}, Allow: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
	c.fails.turnWait = 20 * time.Millisecond
	attacker := net.ParseIP("203.0.113.66")
	failLogins(c, attacker)
	first := identifyAsync(c, attacker, "guess-first")
	<-asleep
	before := n.Load()
	if _, err := c.Identify(Client{IP: attacker, Authorization: basic("ci", "cipw")}); !isFailedLoginRefusal(err) || !errors.Is(err, ErrRateLimited) {
		t.Errorf("a login that never got the turn: %v, want a failed-login refusal with a retry time", err)
	}
	if n.Load() != before {
		t.Error("bcrypt ran for a request that never got the turn")
	}
	close(wake)
	<-first
	if u, err := c.Identify(Client{IP: attacker, Authorization: basic("ci", "cipw")}); err != nil || u != "ci" {
		t.Fatalf("the refused credential was remembered: %q, %v", u, err)
	}
}

// An address that has not failed verifies all the logins it sends at
// once: users behind one NAT logging in together are never refused.
// Parallel requests with one credential share a verification.
func TestParallelFirstLoginsFromOneAddress(t *testing.T) {
	n, entered, release := gatedCompares(t)
	const users = failFree + 3
	var pairs, names []string
	for i := range users {
		pairs = append(pairs, fmt.Sprint("u", i), fmt.Sprint("heldpw", i))
		names = append(names, fmt.Sprint("u", i))
	}
	c, err := New(Options{HtpasswdFile: writeHtpasswd(t, pairs...), Sleep: func(time.Duration) {},
		Rules: []Rule{{Users: names, Allow: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
	c.bcryptSlots = make(chan struct{}, users) // the global cap is not under test here
	nat := net.ParseIP("198.51.100.7")
	login := func(i int) error {
		u, err := c.Identify(Client{IP: nat, Authorization: basic(fmt.Sprint("u", i), fmt.Sprint("heldpw", i))})
		if err == nil && u != fmt.Sprint("u", i) {
			err = fmt.Errorf("identified as %q", u)
		}
		return err
	}
	done := make(chan error, 2*users)
	for i := range users {
		go func() { done <- login(i) }()
	}
	for range users {
		select {
		case <-entered:
		case err := <-done:
			t.Fatalf("a login from a fresh address did not wait for the others' verifications: %v", err)
		}
	}
	// The same credential as one in flight waits for its verdict.
	for range users {
		go func() { done <- login(0) }()
	}
	release()
	for range 2 * users {
		if err := <-done; err != nil {
			t.Errorf("a login from the shared address: %v", err)
		}
	}
	if got := n.Load(); got != users {
		t.Fatalf("bcrypt ran %d times, want %d", got, users)
	}
}

// Once an address has failed, verifications in flight count against the
// free failures: parallel connections cannot all slip under the threshold.
func TestParallelLoginsAfterAFailure(t *testing.T) {
	n, entered, release := gatedCompares(t)
	c := ciControl(t, nil)
	c.bcryptSlots = make(chan struct{}, 64)
	const more = 10
	waiting := countWaits(c, more)
	ip := net.ParseIP("203.0.113.5")
	c.Identify(Client{IP: ip, Authorization: basic("ci", "typo")})
	done := make(chan error, failFree+more)
	guess := func(i int) {
		_, err := c.Identify(Client{IP: ip, Authorization: basic("ci", fmt.Sprint("held", i))})
		done <- err
	}
	for i := range failFree - 1 {
		go guess(i)
		<-entered
	}
	for i := range more {
		go guess(failFree + i)
	}
	select {
	case <-waiting:
	case <-entered:
		t.Fatalf("more than %d verifications from an address with a failure ran at once", failFree-1)
	case err := <-done:
		t.Fatalf("a request past the free failures did not wait for a turn: %v", err)
	}
	release()
	for range failFree - 1 + more {
		if err := <-done; !errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrRateLimited) {
			t.Errorf("a guess: %v, want ErrUnauthenticated", err)
		}
	}
	if got, want := n.Load(), int64(1+failFree-1+more); got != want {
		t.Fatalf("bcrypt ran %d times, want %d", got, want)
	}
}

// Requests with one credential arriving together run bcrypt once: the
// first registers its verification in the same step as the cache lookup.
func TestSameCredentialOneVerification(t *testing.T) {
	n := countCompares(t)
	c := ciControl(t, nil)
	for round := range 40 {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				<-start
				ip := net.IPv4(198, 51, 100, byte(i))
				if u, err := c.Identify(Client{IP: ip, Authorization: basic("ci", "cipw")}); err != nil || u != "ci" {
					t.Errorf("round %d: %q, %v", round, u, err)
				}
			})
		}
		before := n.Load()
		close(start)
		wg.Wait()
		if got := n.Load() - before; got != 1 {
			t.Fatalf("round %d: 16 requests with one credential ran bcrypt %d times, want 1", round, got)
		}
		c.creds.mu.Lock()
		clear(c.creds.accepted)
		c.creds.mu.Unlock()
	}
}

// bcrypt never runs on every core at once, however many addresses try.
func TestBcryptBoundedGlobally(t *testing.T) {
	_, entered, release := gatedCompares(t)
	c := ciControl(t, nil)
	slots := cap(c.bcryptSlots)
	var wg sync.WaitGroup
	for i := range slots + 3 {
		wg.Go(func() {
			c.Identify(Client{IP: net.IPv4(198, 51, 100, byte(i)), Authorization: basic("ci", fmt.Sprint("held", i))})
		})
	}
	for range slots {
		<-entered
	}
	// Nothing can signal that the others are parked at the cap, so give
	// them the time to show up in bcrypt if they could.
	select {
	case <-entered:
		t.Errorf("more than %d bcrypt comparisons ran at once", slots)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	wg.Wait()
}

// rate_per_client charges an address for its failed password
// verifications, in a bucket of their own, and for nothing else it does
// unidentified: Docker's unauthenticated ping is always answered 401, so
// clients behind one NAT can log in, and anonymous pulls do not use up
// the budget that gates logins. A guesser still cannot try passwords
// faster than the rate.
func TestRatePerClientCountsFailedGuesses(t *testing.T) {
	n := countCompares(t)
	clk := testclock.New()
	c, err := New(Options{HtpasswdFile: writeHtpasswd(t, "ci", "cipw", "ann", "annpw", "bob", "bobpw", "dan", "danpw"),
		TrustedNetworks: []string{"10.0.0.0/8"}, RatePerClient: 2, Now: clk.Now, Sleep: func(time.Duration) {},
		Rules: []Rule{{Users: []string{"*", "anonymous"}, Allow: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
	nat := net.ParseIP("203.0.113.100")
	for i := range 30 {
		if _, err := c.Identify(Client{IP: nat}); !errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrRateLimited) {
			t.Fatalf("unauthenticated request %d from a shared address: %v, want ErrUnauthenticated", i, err)
		}
	}
	// Logins that succeed do not spend the address's budget: users behind
	// one NAT address each have their own rate.
	for _, u := range []string{"ci", "ann", "bob"} {
		if got, err := c.Identify(Client{IP: nat, Authorization: basic(u, u+"pw")}); err != nil || got != u {
			t.Fatalf("%s logging in from a shared address after the pings: %q, %v", u, got, err)
		}
	}
	// Anonymous pulls from a trusted address use up its own bucket, not
	// the one that lets a user log in from there.
	office := net.ParseIP("10.0.0.9")
	for i := 0; ; i++ {
		if _, err := c.Identify(Client{IP: office}); errors.Is(err, ErrRateLimited) {
			break
		} else if err != nil || i > 10 {
			t.Fatalf("anonymous pull %d: %v, want a rate limit within the burst", i, err)
		}
	}
	if u, err := c.Identify(Client{IP: office, Authorization: basic("dan", "danpw")}); err != nil || u != "dan" {
		t.Fatalf("a first login from an address anonymous pulls drained: %q, %v", u, err)
	}
	guesser := net.ParseIP("203.0.113.2")
	for i := range 2 {
		c.Identify(Client{IP: guesser, Authorization: basic("ci", fmt.Sprint("guess", i))})
	}
	before := n.Load()
	_, err = c.Identify(Client{IP: guesser, Authorization: basic("ci", "guess-3")})
	var rl *RateLimitError
	if !errors.As(err, &rl) || rl.RetryAfter <= 0 || rl.RetryAfter > time.Second {
		t.Fatalf("a third password in a second at rate 2: %v, want a RateLimitError", err)
	}
	if n.Load() != before {
		t.Fatal("bcrypt ran for a request over the rate")
	}
	if _, err := c.Identify(Client{IP: guesser}); !errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrRateLimited) {
		t.Fatalf("an unauthenticated request from the guesser: %v, want ErrUnauthenticated", err)
	}
	// A trusted client forwarding its Hub login is anonymous at the
	// anonymous rate.
	trusted := Client{IP: net.ParseIP("10.0.0.10"), Authorization: basic("hubuser", "hubpw")}
	for i := range 2 {
		if u, err := c.Identify(trusted); err != nil || u != Anonymous {
			t.Fatalf("trusted request %d: %q, %v", i, u, err)
		}
	}
	clk.Advance(time.Second)
	if _, err := c.Identify(Client{IP: guesser, Authorization: basic("ci", "guess-4")}); !errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrRateLimited) {
		t.Fatalf("a guess a second later: %v, want it verified", err)
	}
}

// TestRepeatedRefusalIsOneFailure: a client repeating a password already
// refused (a stale login in a config) makes one guess, not one per
// request: its address does not pile up failures that would put everyone
// behind it into one-at-a-time checks.
func TestRepeatedRefusalIsOneFailure(t *testing.T) {
	c := ciControl(t, nil)
	ip := net.ParseIP("198.51.100.7")
	for range 20 {
		if _, err := c.Identify(Client{IP: ip, Authorization: basic("ci", "old-password")}); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("a stale password: %v", err)
		}
	}
	c.fails.mu.Lock()
	n := c.fails.entries[ip.String()].n
	c.fails.mu.Unlock()
	if n != 1 {
		t.Errorf("%d failures counted for one password repeated, want 1", n)
	}
}

// A fresh address verifies at most freshParallel passwords at once (a
// NAT's users logging in together); the rest wait for a turn. Before,
// one address could run as many as it had connections, every one a guess
// before the first failure counted, and stall every other login.
func TestFreshAddressParallelismBounded(t *testing.T) {
	_, entered, release := gatedCompares(t)
	c := ciControl(t, nil)
	c.bcryptSlots = make(chan struct{}, 2*freshParallel) // the address's limit, not the machine's, is under test
	const n = freshParallel + 14
	waiting := make(chan struct{}, 1)
	c.fails.onWait = func() {
		select {
		case waiting <- struct{}{}:
		default: // told already
		}
	}
	ip := net.ParseIP("198.51.100.9")
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { c.Identify(Client{IP: ip, Authorization: basic("ci", fmt.Sprint("held", i))}) })
	}
	for range freshParallel {
		<-entered
	}
	select {
	case <-waiting: // a request over the limit waits, not verifies
	case <-time.After(10 * time.Second): // only when none waits
		t.Errorf("no request of %d from a fresh address waited for a turn", n)
	}
	if got := len(entered); got != 0 {
		t.Errorf("%d more than %d verifications ran at once from a fresh address", got, freshParallel)
	}
	release()
	wg.Wait()
}

// A password already refused stays refused for the failure window, so a
// client repeating a stale one for twelve minutes costs its address a few
// failures, not one a minute, and its NAT never reaches one-at-a-time.
func TestStalePasswordCountsOncePerWindow(t *testing.T) {
	clk := testclock.New()
	c := ciControl(t, clk.Now)
	ip := net.ParseIP("198.51.100.10")
	for range 120 { // every 6 s for 12 minutes
		c.Identify(Client{IP: ip, Authorization: basic("ci", "stale")})
		clk.Advance(6 * time.Second)
	}
	c.fails.mu.Lock()
	n := c.fails.entries[ip.String()].n
	c.fails.mu.Unlock()
	if n >= failFree {
		t.Errorf("%d failures counted for one stale password, want fewer than %d", n, failFree)
	}
}

// A verification shared by requests with one credential that was refused
// for its own address (throttled) is not the answer of a request from
// another address: that one verifies for itself.
func TestSharedRefusalNotHandedToAnotherAddress(t *testing.T) {
	_, entered, release := gatedCompares(t)
	c := ciControl(t, nil)
	c.fails.turnWait = 50 * time.Millisecond
	c.bcryptSlots = make(chan struct{}, 4) // the held guess keeps one
	waiting := make(chan struct{}, 10)
	c.fails.onWait = func() { waiting <- struct{}{} }
	a, b := net.ParseIP("203.0.113.1"), net.ParseIP("203.0.113.2")
	failLogins(c, a)
	go c.Identify(Client{IP: a, Authorization: basic("ci", "held-guess")}) // takes a's one turn
	<-entered
	fromA := identifyAsync(c, a, "cipw")
	<-waiting // a's request verifies ci:cipw, and waits for a's turn
	user, err := c.Identify(Client{IP: b, Authorization: basic("ci", "cipw")})
	if err != nil || user != "ci" {
		t.Errorf("the same credential from another address: %q, %v; want ci", user, err)
	}
	if err := <-fromA; !isFailedLoginRefusal(err) {
		t.Errorf("from the throttled address: %v, want a failed-login refusal", err)
	}
	release()
}

// ciControl is a Control with one user, ci (password cipw), who may pull
// everything, on the clock now (nil: the real one); back-offs are not
// slept.
func ciControl(t *testing.T, now func() time.Time) *Control {
	t.Helper()
	c, err := New(Options{HtpasswdFile: writeHtpasswd(t, "ci", "cipw"), Now: now, Sleep: func(time.Duration) {},
		Rules: []Rule{{Users: []string{"ci"}, Allow: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Requests from one throttled address with one credential share its
// verification's refusal: they do not each wait for a turn in their turn,
// one after another (ten layers of one pull would wait ten times).
func TestSharedRefusalFromOneAddressTakenAtOnce(t *testing.T) {
	_, entered, release := gatedCompares(t)
	c := ciControl(t, nil)
	c.fails.turnWait = 300 * time.Millisecond
	c.bcryptSlots = make(chan struct{}, 4) // the held guess keeps one
	var waits atomic.Int32
	waiting := make(chan struct{}, 10)
	c.fails.onWait = func() { waits.Add(1); waiting <- struct{}{} }
	a := net.ParseIP("203.0.113.3")
	failLogins(c, a)
	go c.Identify(Client{IP: a, Authorization: basic("ci", "held-guess")}) // takes a's one turn
	<-entered
	errs := make(chan error, 2)
	login := func() { _, err := c.Identify(Client{IP: a, Authorization: basic("ci", "cipw")}); errs <- err }
	go login()
	<-waiting  // the first verifies ci:cipw and waits for a's turn
	go login() // the second joins that verification
	for range 2 {
		if err := <-errs; !isFailedLoginRefusal(err) {
			t.Errorf("a login from the throttled address: %v, want a failed-login refusal", err)
		}
	}
	if n := waits.Load(); n != 1 {
		t.Errorf("%d waits for the address's turn, want 1 (the second shares the first's)", n)
	}
	release()
}

// failLogins makes failFree wrong guesses for ci from ip: past them, ip
// verifies one password at a time.
func failLogins(c *Control, ip net.IP) {
	for i := range failFree {
		c.Identify(Client{IP: ip, Authorization: basic("ci", fmt.Sprint("guess", i))})
	}
}

// identifyAsync identifies ci with password from ip in a goroutine; the
// error arrives on the channel.
func identifyAsync(c *Control, ip net.IP, password string) <-chan error {
	out := make(chan error, 1)
	go func() {
		_, err := c.Identify(Client{IP: ip, Authorization: basic("ci", password)})
		out <- err
	}()
	return out
}
