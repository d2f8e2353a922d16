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

// Past the free failures an address gets one verification at a time:
// parallel connections from it are refused at once instead of each waiting
// the back-off and then all running bcrypt together.
func TestFailedLoginsOneVerificationPerAddress(t *testing.T) {
	n := countCompares(t)
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
	attacker := net.ParseIP("203.0.113.66")
	if _, err := c.Identify(Client{IP: attacker, Authorization: basic("ci", "cipw")}); err != nil {
		t.Fatal(err) // ci logs in before the attack: cached from here on
	}
	for i := range failFree {
		c.Identify(Client{IP: attacker, Authorization: basic("ci", fmt.Sprint("guess", i))})
	}
	first := make(chan error, 1)
	go func() {
		_, err := c.Identify(Client{IP: attacker, Authorization: basic("ci", "guess-first")})
		first <- err
	}()
	<-asleep // the address's turn is out, waiting its back-off
	var wg sync.WaitGroup
	var refused atomic.Int32
	for i := range 50 {
		wg.Go(func() {
			_, err := c.Identify(Client{IP: attacker, Authorization: basic("ci", fmt.Sprint("parallel", i))})
			if isFailedLoginRefusal(err) && errors.Is(err, ErrRateLimited) {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if got := refused.Load(); got != 50 {
		t.Errorf("%d of 50 parallel guesses refused with a retry time while the address's turn was out, want all", got)
	}
	// A correct password not yet verified waits its turn too; ci's cached
	// one is not held up.
	if _, err := c.Identify(Client{IP: attacker, Authorization: basic("bob", "bobpw")}); !isFailedLoginRefusal(err) {
		t.Errorf("a new credential from the address while its turn was out: %v, want a failed-login refusal", err)
	}
	if u, err := c.Identify(Client{IP: attacker, Authorization: basic("ci", "cipw")}); err != nil || u != "ci" {
		t.Errorf("a cached credential from the address: %q, %v", u, err)
	}
	close(wake)
	if err := <-first; !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("the guess that had the turn: %v, want ErrUnauthenticated", err)
	}
	if got, want := n.Load(), int64(1+failFree+1); got != want {
		t.Fatalf("bcrypt ran %d times, want %d (the login, the free failures, the one turn)", got, want)
	}
	if got := sleeps.Load(); got != 1 {
		t.Fatalf("%d requests waited the back-off, want 1", got)
	}
	// With the turn back, the next one waits and verifies.
	if u, err := c.Identify(Client{IP: attacker, Authorization: basic("bob", "bobpw")}); err != nil || u != "bob" {
		t.Fatalf("after the turn came back: %q, %v", u, err)
	}
}

// Verifications in flight count against the free failures: a fresh
// address opening many connections at once gets failFree guesses, not one
// per connection. Parallel requests with one credential share a
// verification.
func TestParallelLoginsFromOneAddress(t *testing.T) {
	n, entered, release := gatedCompares(t)
	c, err := New(Options{HtpasswdFile: writeHtpasswd(t, "ci", "cipw"), Sleep: func(time.Duration) {},
		Rules: []Rule{{Users: []string{"ci"}, Allow: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
	c.bcryptSlots = make(chan struct{}, failFree) // the global cap is not under test here
	ip := net.ParseIP("203.0.113.5")
	var held sync.WaitGroup
	for i := range failFree {
		held.Go(func() { c.Identify(Client{IP: ip, Authorization: basic("ci", fmt.Sprint("held", i))}) })
		<-entered
	}
	var wg sync.WaitGroup
	var refused atomic.Int32
	for i := range 20 {
		wg.Go(func() {
			if _, err := c.Identify(Client{IP: ip, Authorization: basic("ci", fmt.Sprint("more", i))}); isFailedLoginRefusal(err) {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if got := refused.Load(); got != 20 {
		t.Errorf("with %d verifications in flight, %d of 20 more from the address were refused, want all", failFree, got)
	}
	// The same credential as one in flight waits for its verdict.
	for range 10 {
		wg.Go(func() {
			if _, err := c.Identify(Client{IP: ip, Authorization: basic("ci", "held0")}); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("a request sharing a verification: %v, want ErrUnauthenticated", err)
			}
		})
	}
	release()
	held.Wait()
	wg.Wait()
	if got := n.Load(); got != failFree {
		t.Fatalf("bcrypt ran %d times, want %d", got, failFree)
	}
}

// bcrypt never runs on every core at once, however many addresses try.
func TestBcryptBoundedGlobally(t *testing.T) {
	_, entered, release := gatedCompares(t)
	c, err := New(Options{HtpasswdFile: writeHtpasswd(t, "ci", "cipw"), Sleep: func(time.Duration) {},
		Rules: []Rule{{Users: []string{"ci"}, Allow: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
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

// Clients that are not identified, and credentials about to be verified,
// pay the per-address rate: a client cannot try passwords (or knock)
// faster than rate_per_client.
func TestRateLimitUnidentified(t *testing.T) {
	n := countCompares(t)
	clk := testclock.New()
	c, err := New(Options{HtpasswdFile: writeHtpasswd(t, "ci", "cipw", "ann", "annpw", "bob", "bobpw"), TrustedNetworks: []string{"10.0.0.0/8"},
		RatePerClient: 2, Now: clk.Now, Sleep: func(time.Duration) {},
		Rules: []Rule{{Users: []string{"*", "anonymous"}, Allow: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
	// Logins that succeed do not spend the address's budget: users behind
	// one NAT address each have their own rate.
	nat := net.ParseIP("203.0.113.100")
	for _, u := range []string{"ci", "ann", "bob"} {
		if got, err := c.Identify(Client{IP: nat, Authorization: basic(u, u+"pw")}); err != nil || got != u {
			t.Fatalf("%s logging in from a shared address: %q, %v", u, got, err)
		}
	}
	knocker, guesser := net.ParseIP("203.0.113.1"), net.ParseIP("203.0.113.2")
	for i := range 2 {
		if _, err := c.Identify(Client{IP: knocker}); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("unidentified request %d within the rate: %v", i, err)
		}
	}
	if _, err := c.Identify(Client{IP: knocker}); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("unidentified client over the rate: %v, want ErrRateLimited", err)
	}
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
	// A trusted client forwarding its Hub login pays once per request,
	// not once for the verification and again as anonymous.
	trusted := Client{IP: net.ParseIP("10.0.0.9"), Authorization: basic("hubuser", "hubpw")}
	for i := range 2 {
		if u, err := c.Identify(trusted); err != nil || u != Anonymous {
			t.Fatalf("trusted request %d: %q, %v", i, u, err)
		}
	}
	clk.Advance(time.Second)
	if _, err := c.Identify(Client{IP: knocker}); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("a second later: %v", err)
	}
}
