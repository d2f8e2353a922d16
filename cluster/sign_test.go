package cluster

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// fakeClock is a settable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func newTestSigner(key string, c *fakeClock) *signer {
	return newSigner([]byte(key), 30*time.Second, c.now)
}

const uri = "/v2/library/alpine/blobs/sha256:0123?ns=docker.io"

func TestSignVerify(t *testing.T) {
	c := &fakeClock{time.Unix(1_800_000_000, 0)}
	s := newTestSigner("0123456789abcdef0123", c)
	if err := s.verify("GET", uri, s.sign("GET", uri)); err != nil {
		t.Fatalf("a fresh signature: %v", err)
	}
	// Within the window either way: clocks differ a little.
	h := s.sign("GET", uri)
	c.t = c.t.Add(29 * time.Second)
	if err := s.verify("GET", uri, h); err != nil {
		t.Fatalf("29s old: %v", err)
	}
	c.t = c.t.Add(-58 * time.Second)
	if err := s.verify("GET", uri, s.sign("GET", uri)); err != nil {
		t.Fatalf("signed by a clock behind: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	c := &fakeClock{time.Unix(1_800_000_000, 0)}
	s := newTestSigner("0123456789abcdef0123", c)
	other := newTestSigner("another key, same length", c)
	good := func() string { return s.sign("GET", uri) }
	tamper := func(h string) string { // flip one hex digit of the signature
		b := []byte(h)
		if b[len(b)-1] == '0' {
			b[len(b)-1] = '1'
		} else {
			b[len(b)-1] = '0'
		}
		return string(b)
	}
	cases := []struct {
		name        string
		method, uri string
		header      func() string
		want        error
	}{
		{"wrong key", "GET", uri, func() string { return other.sign("GET", uri) }, errMismatch},
		{"tampered path", "GET", strings.Replace(uri, "alpine", "busybox", 1), good, errMismatch},
		{"tampered query", "GET", strings.Replace(uri, "docker.io", "ghcr.io", 1), good, errMismatch},
		{"other method", "HEAD", uri, good, errMismatch},
		{"tampered signature", "GET", uri, func() string { return tamper(good()) }, errMismatch},
		{"malformed", "GET", uri, func() string { return "v1 x y z" }, errMalformed},
		{"other version", "GET", uri, func() string { return strings.Replace(good(), "v1", "v2", 1) }, errMalformed},
		{"stale", "GET", uri, func() string {
			h := good()
			c.t = c.t.Add(31 * time.Second)
			return h
		}, errStale},
		{"from the future", "GET", uri, func() string {
			c.t = c.t.Add(31 * time.Second)
			h := good()
			c.t = c.t.Add(-31 * time.Second)
			return h
		}, errStale},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.t = time.Unix(1_800_000_000, 0)
			err := s.verify(tc.method, tc.uri, tc.header())
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrBadSignature) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestVerifyReplay: a signature is accepted once; the same header again,
// even within the window, is a replay. Another request signed the same
// second (another nonce) still passes.
func TestVerifyReplay(t *testing.T) {
	c := &fakeClock{time.Unix(1_800_000_000, 0)}
	s := newTestSigner("0123456789abcdef0123", c)
	h := s.sign("GET", uri)
	if err := s.verify("GET", uri, h); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(5 * time.Second)
	if err := s.verify("GET", uri, h); !errors.Is(err, errReplay) {
		t.Fatalf("replayed: got %v, want a replay refusal", err)
	}
	if err := s.verify("GET", uri, s.sign("GET", uri)); err != nil {
		t.Fatalf("a second request: %v", err)
	}
	// Once the window has passed, the old header is stale rather than
	// remembered: the memory does not grow for ever.
	c.t = c.t.Add(40 * time.Second)
	if err := s.verify("GET", uri, h); !errors.Is(err, errStale) {
		t.Fatalf("after the window: got %v, want stale", err)
	}
}

// TestVerifyRemembersOnlyGoodNonces: junk signatures do not fill the
// replay memory.
func TestVerifyRemembersOnlyGoodNonces(t *testing.T) {
	c := &fakeClock{time.Unix(1_800_000_000, 0)}
	s := newTestSigner("0123456789abcdef0123", c)
	other := newTestSigner("another key, same length", c)
	for range 100 {
		_ = s.verify("GET", uri, other.sign("GET", uri))
	}
	if len(s.seen) != 0 {
		t.Fatalf("%d nonces remembered from refused requests", len(s.seen))
	}
}
