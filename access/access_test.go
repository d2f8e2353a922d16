package access

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/regmirror/regmirror/internal/testclock"
)

// htpasswdLines makes bcrypt entries at MinCost for user/password pairs.
func htpasswdLines(t testing.TB, pairs ...string) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		h, err := bcrypt.GenerateFromPassword([]byte(pairs[i+1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", pairs[i], h)
	}
	return b.String()
}

func writeHtpasswd(t testing.TB, pairs ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte(htpasswdLines(t, pairs...)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

func TestRules(t *testing.T) {
	c, err := New(Options{
		HtpasswdFile:    writeHtpasswd(t, "ci", "cipw", "alice", "alicepw", "bob", "bobpw"),
		TrustedNetworks: []string{"10.20.0.0/16"},
		Rules: []Rule{
			{Users: []string{"ci", "anonymous"}, Allow: []string{"docker.io/**", "ghcr.io/myorg/**"}, Deny: []string{"docker.io/someuser/**"}},
			{Users: []string{"alice"}, Allow: []string{"**"}, Deny: []string{"ghcr.io/secret/*"}},
			{Users: []string{"*"}, Allow: []string{"docker.io/library/*"}},
			{Users: []string{"alice"}, Allow: []string{"ghcr.io/secret/**"}}, // never reached: the first alice rule decides
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user, registry, repo string
		want                 bool
	}{
		{"ci", "docker.io", "library/alpine", true},
		{"ci", "docker.io", "someuser/app", false},         // deny beats allow
		{"ci", "docker.io", "someuser/deep/app", false},    // ** crosses components
		{"ci", "docker.io", "someuserx/app", true},         // not under someuser/
		{"ci", "ghcr.io", "myorg/team/app", true},          // ** across components
		{"ci", "ghcr.io", "other/app", false},              // matching rule decides: no allow matches
		{"anonymous", "docker.io", "library/alpine", true}, // the default registry's normalised name
		{"anonymous", "quay.io", "x/y", false},
		{"alice", "quay.io", "x/y", true},
		{"alice", "ghcr.io", "secret/app", false},         // her first rule decides; the later one is never read
		{"alice", "ghcr.io", "secret/app/sub", true},      // * stays in one component
		{"bob", "docker.io", "library/alpine", true},      // "*": any identified user
		{"bob", "docker.io", "someuser/app", false},       // no allow in bob's rule matches
		{"nobody", "docker.io", "library/alpine", true},   // "*" is any name the caller identified
		{"anonymous", "ghcr.io", "myorg/app", true},       // anonymous is named in rule 0
		{"anonymous", "docker.io", "someuser/app", false}, // ... and denied with it
	}
	for _, tt := range tests {
		if got := c.May(tt.user, tt.registry, tt.repo); got != tt.want {
			t.Errorf("May(%s, %s/%s) = %v, want %v", tt.user, tt.registry, tt.repo, got, tt.want)
		}
	}
	// Registry-level questions (the status page): may the user pull
	// anything from it?
	for _, tt := range []struct {
		user, registry string
		want           bool
	}{
		{"ci", "docker.io", true}, {"ci", "ghcr.io", true}, {"ci", "quay.io", false},
		{"alice", "quay.io", true}, {"nobody", "docker.io", true}, {"anonymous", "quay.io", false},
	} {
		if got := c.May(tt.user, tt.registry, ""); got != tt.want {
			t.Errorf("May(%s, %s, \"\") = %v, want %v", tt.user, tt.registry, got, tt.want)
		}
	}
	// "*" does not include anonymous: a rule set with only "*" denies it.
	c2, err := New(Options{TrustedNetworks: []string{"127.0.0.0/8"}, ClientCerts: true,
		Rules: []Rule{{Users: []string{"*"}, Allow: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if c2.May(Anonymous, "docker.io", "library/alpine") {
		t.Error(`"*" let anonymous pull`)
	}
	if !c2.May("someone", "docker.io", "library/alpine") {
		t.Error(`"*" did not let an identified user pull`)
	}
}

func TestIdentify(t *testing.T) {
	clk := testclock.New()
	c, err := New(Options{
		HtpasswdFile:    writeHtpasswd(t, "ci", "cipw"),
		TrustedNetworks: []string{"10.20.0.0/16", "192.168.1.7"},
		ClientCerts:     true,
		Rules:           []Rule{{Users: []string{"ci", "anonymous", "node1"}, Allow: []string{"docker.io/**"}}},
		Now:             clk.Now,
		Sleep:           func(time.Duration) {},
	})
	if err != nil {
		t.Fatal(err)
	}
	outside, inside := net.ParseIP("203.0.113.5"), net.ParseIP("10.20.3.4")
	tests := []struct {
		name    string
		client  Client
		want    string
		wantErr error
	}{
		{"password", Client{IP: outside, Authorization: basic("ci", "cipw")}, "ci", nil},
		{"wrong password", Client{IP: outside, Authorization: basic("ci", "nope")}, "", ErrUnauthenticated},
		{"unknown user", Client{IP: outside, Authorization: basic("eve", "cipw")}, "", ErrUnauthenticated},
		{"nothing", Client{IP: outside}, "", ErrUnauthenticated},
		{"bearer is not a login", Client{IP: outside, Authorization: "Bearer abc"}, "", ErrUnauthenticated},
		{"trusted network", Client{IP: inside}, Anonymous, nil},
		{"single trusted address", Client{IP: net.ParseIP("192.168.1.7")}, Anonymous, nil},
		{"trusted network, Hub login forwarded by dockerd", Client{IP: inside, Authorization: basic("hubuser", "hubpw")}, Anonymous, nil},
		{"trusted network, own login", Client{IP: inside, Authorization: basic("ci", "cipw")}, "ci", nil},
		{"certificate", Client{IP: outside, CertCN: "node1"}, "node1", nil},
		{"certificate, Hub login forwarded", Client{IP: outside, CertCN: "node1", Authorization: basic("hubuser", "x")}, "node1", nil},
		{"certificate named anonymous is no identity", Client{IP: outside, CertCN: "anonymous"}, "", ErrUnauthenticated},
		{"certificate named as the mirror's own requests is no identity", Client{IP: outside, CertCN: "regmirror"}, "", ErrUnauthenticated},
		{"certificate named as a peer is no identity", Client{IP: outside, CertCN: "regmirror-peer"}, "", ErrUnauthenticated},
		{"certificate named as a peer, trusted network", Client{IP: inside, CertCN: "regmirror-peer"}, Anonymous, nil},
		{"basic header case", Client{IP: outside, Authorization: "basic " + base64.StdEncoding.EncodeToString([]byte("ci:cipw"))}, "ci", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Identify(tt.client)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("user %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := c.Authorize(Client{IP: inside}, "ghcr.io", "x/y"); !errors.Is(err, ErrDenied) {
		t.Errorf("denied repository: %v, want ErrDenied", err)
	}
	if u, err := c.Authorize(Client{IP: outside, Authorization: basic("ci", "cipw")}, "docker.io", "library/alpine"); err != nil || u != "ci" {
		t.Errorf("allowed repository: %q, %v", u, err)
	}
	// Certificates count only when the server verifies them.
	c3, err := New(Options{TrustedNetworks: []string{"10.0.0.0/8"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c3.Identify(Client{IP: outside, CertCN: "node1"}); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("a certificate name counted without ClientCerts: %v", err)
	}
}

// countCompares counts bcrypt comparisons during the test.
func countCompares(t *testing.T) *atomic.Int64 {
	var n atomic.Int64
	orig := compareHash
	compareHash = func(h, p []byte) error { n.Add(1); return orig(h, p) }
	t.Cleanup(func() { compareHash = orig })
	return &n
}

func TestCredentialCache(t *testing.T) {
	n := countCompares(t)
	clk := testclock.New()
	path := writeHtpasswd(t, "ci", "cipw")
	c, err := New(Options{HtpasswdFile: path, CredentialTTL: time.Minute, Now: clk.Now, Sleep: func(time.Duration) {},
		Rules: []Rule{{Users: []string{"ci"}, Allow: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP("203.0.113.5")
	for range 100 {
		if _, err := c.Identify(Client{IP: ip, Authorization: basic("ci", "cipw")}); err != nil {
			t.Fatal(err)
		}
	}
	if got := n.Load(); got != 1 {
		t.Fatalf("100 requests with one credential ran bcrypt %d times, want 1", got)
	}
	// An unknown user costs a comparison too (against the dummy hash).
	if _, err := c.Identify(Client{IP: ip, Authorization: basic("eve", "x")}); err == nil {
		t.Fatal("unknown user accepted")
	}
	if got := n.Load(); got != 2 {
		t.Fatalf("an unknown user ran bcrypt %d times in all, want 2 (the dummy comparison)", got)
	}
	// A different password for a cached user is not the cached one.
	if _, err := c.Identify(Client{IP: ip, Authorization: basic("ci", "cipw2")}); err == nil {
		t.Fatal("a different password was taken from the cache")
	}
	clk.Advance(time.Minute + time.Second)
	if _, err := c.Identify(Client{IP: ip, Authorization: basic("ci", "cipw")}); err != nil {
		t.Fatal(err)
	}
	if got := n.Load(); got != 4 {
		t.Fatalf("after the TTL bcrypt ran %d times in all, want 4", got)
	}
}

// A flood of wrong credentials does not push accepted ones out of the
// cache: users keep their verified login without running bcrypt again.
func TestRefusalsDoNotEvictAcceptedCredentials(t *testing.T) {
	var real atomic.Int64
	orig := compareHash
	compareHash = func(h, p []byte) error {
		if strings.HasPrefix(string(p), "wrong") {
			return bcrypt.ErrMismatchedHashAndPassword // fast: thousands of them
		}
		real.Add(1)
		return orig(h, p)
	}
	t.Cleanup(func() { compareHash = orig })
	c, err := New(Options{HtpasswdFile: writeHtpasswd(t, "ci", "cipw"), Sleep: func(time.Duration) {},
		Rules: []Rule{{Users: []string{"ci"}, Allow: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
	user := Client{IP: net.ParseIP("203.0.113.5"), Authorization: basic("ci", "cipw")}
	if _, err := c.Identify(user); err != nil {
		t.Fatal(err)
	}
	for i := range maxCredEntries + 10 {
		c.Identify(Client{IP: net.ParseIP("198.51.100.1"), Authorization: basic("ci", fmt.Sprint("wrong", i))})
	}
	if _, err := c.Identify(user); err != nil {
		t.Fatal(err)
	}
	if got := real.Load(); got != 1 {
		t.Fatalf("after %d wrong credentials the user's login ran bcrypt %d times in all, want 1 (still cached)", maxCredEntries+10, got)
	}
}

func TestHtpasswdReload(t *testing.T) {
	clk := testclock.New()
	path := writeHtpasswd(t, "ci", "old")
	c, err := New(Options{HtpasswdFile: path, Now: clk.Now, Sleep: func(time.Duration) {},
		Rules: []Rule{{Users: []string{"ci"}, Allow: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP("203.0.113.5")
	id := func(user, pw string) error {
		_, err := c.Identify(Client{IP: ip, Authorization: basic(user, pw)})
		return err
	}
	if err := id("ci", "old"); err != nil {
		t.Fatal(err)
	}
	// New password and a new user; the file's size changes, and its mtime.
	if err := os.WriteFile(path, []byte(htpasswdLines(t, "ci", "new", "dave", "davepw")), 0o600); err != nil {
		t.Fatal(err)
	}
	future := clk.Now().Add(time.Hour)
	os.Chtimes(path, future, future)
	// Within a second of the last look the old table (and cache) stand.
	if err := id("ci", "old"); err != nil {
		t.Fatalf("reloaded before a second passed: %v", err)
	}
	clk.Advance(2 * time.Second)
	if err := id("ci", "old"); err == nil {
		t.Fatal("old password still accepted after the file changed (cached credential survived the reload)")
	}
	if err := id("ci", "new"); err != nil {
		t.Fatalf("new password: %v", err)
	}
	if err := id("dave", "davepw"); err != nil {
		t.Fatalf("new user: %v", err)
	}
	// Naming a user as the mirror's own requests is a broken edit too.
	os.WriteFile(path, []byte(htpasswdLines(t, "ci", "new", "regmirror", "x")), 0o600)
	clk.Advance(2 * time.Second)
	os.Chtimes(path, clk.Now().Add(time.Hour), clk.Now().Add(time.Hour))
	if err := id("regmirror", "x"); err == nil {
		t.Fatal("an htpasswd entry took the name of the mirror's own requests")
	}
	if err := id("ci", "new"); err != nil {
		t.Fatalf("an edit naming a reserved user locked out a user: %v", err)
	}
	// A broken edit keeps the last good table.
	os.WriteFile(path, []byte("ci:plaintext\n"), 0o600)
	clk.Advance(2 * time.Second)
	os.Chtimes(path, clk.Now().Add(2*time.Hour), clk.Now().Add(2*time.Hour))
	if err := id("ci", "new"); err != nil {
		t.Fatalf("a broken htpasswd file locked out a user: %v", err)
	}
}

func TestFailedLoginsSlowDown(t *testing.T) {
	clk := testclock.New()
	var slept []time.Duration
	c, err := New(Options{HtpasswdFile: writeHtpasswd(t, "ci", "cipw"), Now: clk.Now,
		Sleep: func(d time.Duration) { slept = append(slept, d) },
		Rules: []Rule{{Users: []string{"ci"}, Allow: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
	attacker, other := net.ParseIP("203.0.113.66"), net.ParseIP("203.0.113.7")
	for i := range 8 {
		c.Identify(Client{IP: attacker, Authorization: basic("ci", fmt.Sprint("guess", i))})
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	if fmt.Sprint(slept) != fmt.Sprint(want) {
		t.Fatalf("waits %v, want %v (free for the first %d failures, then doubling)", slept, want, failFree)
	}
	slept = nil
	if _, err := c.Identify(Client{IP: other, Authorization: basic("ci", "cipw")}); err != nil || len(slept) != 0 {
		t.Fatalf("another address was slowed down (%v) or refused (%v)", slept, err)
	}
	clk.Advance(failWindow + time.Second)
	c.Identify(Client{IP: attacker, Authorization: basic("ci", "again")})
	if len(slept) != 0 {
		t.Fatalf("failures older than the window still slow down: %v", slept)
	}
}

func TestRateLimit(t *testing.T) {
	clk := testclock.New()
	c, err := New(Options{HtpasswdFile: writeHtpasswd(t, "ci", "cipw"), TrustedNetworks: []string{"10.0.0.0/8"},
		RatePerClient: 2, Now: clk.Now, Rules: []Rule{{Users: []string{"ci", "anonymous"}, Allow: []string{"**"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ci := Client{IP: net.ParseIP("203.0.113.5"), Authorization: basic("ci", "cipw")}
	ciElsewhere := Client{IP: net.ParseIP("203.0.113.6"), Authorization: basic("ci", "cipw")}
	anon1, anon2 := Client{IP: net.ParseIP("10.0.0.1")}, Client{IP: net.ParseIP("10.0.0.2")}
	for i := range 2 {
		if _, err := c.Authorize(ci, "docker.io", "library/alpine"); err != nil {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
	}
	_, err = c.Authorize(ciElsewhere, "docker.io", "library/alpine")
	var rl *RateLimitError
	if !errors.As(err, &rl) || !errors.Is(err, ErrRateLimited) {
		t.Fatalf("third request of user ci (from another address): %v, want a RateLimitError", err)
	}
	if rl.RetryAfter <= 0 || rl.RetryAfter > time.Second {
		t.Fatalf("RetryAfter %v", rl.RetryAfter)
	}
	// Anonymous clients are limited per address.
	for _, a := range []Client{anon1, anon1, anon2, anon2} {
		if _, err := c.Identify(a); err != nil {
			t.Fatalf("anonymous %s: %v", a.IP, err)
		}
	}
	if _, err := c.Identify(anon1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("anonymous over its rate: %v", err)
	}
	clk.Advance(time.Second)
	if _, err := c.Authorize(ci, "docker.io", "library/alpine"); err != nil {
		t.Fatalf("after a second: %v", err)
	}
}

func TestValidation(t *testing.T) {
	dir := t.TempDir()
	good := writeHtpasswd(t, "ci", "cipw")
	bad := filepath.Join(dir, "bad")
	reserved := filepath.Join(dir, "reserved")
	os.WriteFile(reserved, []byte(htpasswdLines(t, "ci", "x", "regmirror", "x", "regmirror-peer", "x")), 0o600)
	os.WriteFile(bad, []byte(htpasswdLines(t, "ci", "x")+"# comment\n\nplain:secret\nmd5:$apr1$abc$def\nnocolon\n"), 0o600)
	tests := []struct {
		name string
		opts Options
		want []string // each must appear in the error
	}{
		{"non-bcrypt lines", Options{HtpasswdFile: bad}, []string{"line 4", `"plain"`, "line 5", `"md5"`, "line 6", "htpasswd -B"}},
		{"missing file", Options{HtpasswdFile: filepath.Join(dir, "none")}, []string{"htpasswd_file"}},
		{"bad CIDR", Options{TrustedNetworks: []string{"10.0.0.0/8", "10.0.0/33"}}, []string{"trusted_networks[1]", "10.0.0/33"}},
		{"bad glob", Options{HtpasswdFile: good, Rules: []Rule{{Users: []string{"ci"}, Allow: []string{"docker.io/[x]"}}}}, []string{"auth.rule[0].allow[0]", "docker.io/[x]"}},
		{"bad deny glob", Options{HtpasswdFile: good, Rules: []Rule{{Users: []string{"ci"}, Deny: []string{"a//b"}}}}, []string{"auth.rule[0].deny[0]"}},
		{"unknown user", Options{HtpasswdFile: good, Rules: []Rule{{Users: []string{"ci"}}, {Users: []string{"anonymous", "mallory"}}}}, []string{"auth.rule[1].users[1]", `"mallory"`}},
		{"unknown admin", Options{HtpasswdFile: good, Admins: []string{"root"}}, []string{"auth.admins[0]", `"root"`}},
		{"no users in a rule", Options{HtpasswdFile: good, Rules: []Rule{{Allow: []string{"**"}}}}, []string{"auth.rule[0]: names no users"}},
		{"nobody identifiable", Options{}, []string{"nobody can be identified"}},
		{"internal users in htpasswd", Options{HtpasswdFile: reserved}, []string{"line 2", `"regmirror"`, "line 3", `"regmirror-peer"`, "reserved"}},
		{"internal user in a rule", Options{HtpasswdFile: good, ClientCerts: true, Rules: []Rule{{Users: []string{"ci", "regmirror-peer"}, Allow: []string{"**"}}}}, []string{"auth.rule[0].users[1]", `"regmirror-peer"`, "reserved"}},
		{"internal user an admin", Options{HtpasswdFile: good, ClientCerts: true, Admins: []string{"regmirror"}}, []string{"auth.admins[0]", `"regmirror"`, "reserved"}},
		{"negative rate", Options{HtpasswdFile: good, RatePerClient: -1}, []string{"rate_per_client"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	// With client certificates, a rule user absent from htpasswd may be a
	// certificate's CN: accepted (with a warning).
	if _, err := New(Options{HtpasswdFile: good, ClientCerts: true, Rules: []Rule{{Users: []string{"node1"}, Allow: []string{"**"}}}}); err != nil {
		t.Fatalf("certificate user refused: %v", err)
	}
}
