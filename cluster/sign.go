package cluster

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Header carries a peer request's signature (see the package doc).
const Header = "X-Regmirror-Peer"

// UpstreamFailedHeader is set by an owner on an error answer its own
// upstream caused (the proxy's hdrUpstreamFailed): the asker falls back
// for that request without marking the owner down.
const UpstreamFailedHeader = "X-Regmirror-Upstream-Failed"

// PingPath is the peer health endpoint the proxy answers.
const PingPath = "/_regmirror/peer"

// Refusals of a peer request, all wrapping ErrBadSignature.
var (
	ErrBadSignature = errors.New("cluster: bad peer signature")
	errMalformed    = fmt.Errorf("%w: malformed header", ErrBadSignature)
	errStale        = fmt.Errorf("%w: timestamp outside the accepted window", ErrBadSignature)
	errReplay       = fmt.Errorf("%w: replayed", ErrBadSignature)
	errMismatch     = fmt.Errorf("%w: signature does not match (is the shared secret the same on every node?)", ErrBadSignature)
	errTooMany      = fmt.Errorf("%w: too many peer requests in the window to remember", ErrBadSignature)
)

// maxNonces bounds the replay memory: at most this many peer requests are
// accepted per MaxSkew window (about 2,000 a second with the default).
const maxNonces = 1 << 17

// signer signs and verifies peer requests under one shared key.
type signer struct {
	key  []byte
	skew time.Duration
	now  func() time.Time

	mu   sync.Mutex
	seen map[string]time.Time // nonce → when it may be forgotten
}

func newSigner(key []byte, skew time.Duration, now func() time.Time) *signer {
	return &signer{key: key, skew: skew, now: now, seen: map[string]time.Time{}}
}

func (s *signer) mac(method, uri, ts, nonce string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("regmirror-peer-v1\n" + method + "\n" + uri + "\n" + ts + "\n" + nonce))
	return hex.EncodeToString(m.Sum(nil))
}

// sign returns the Header value for a request.
func (s *signer) sign(method, uri string) string {
	var n [16]byte
	_, _ = rand.Read(n[:]) // crypto/rand never fails on supported platforms
	nonce := hex.EncodeToString(n[:])
	ts := strconv.FormatInt(s.now().Unix(), 10)
	return "v1 " + ts + " " + nonce + " " + s.mac(method, uri, ts, nonce)
}

// verify checks a Header value for method and uri. The nonce is remembered
// only once the signature checked out, so junk cannot fill the memory.
func (s *signer) verify(method, uri, value string) error {
	f := strings.Fields(value)
	if len(f) != 4 || f[0] != "v1" || len(f[2]) != 32 || len(f[3]) != 64 {
		return errMalformed
	}
	sec, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return errMalformed
	}
	now := s.now()
	ts := time.Unix(sec, 0)
	if ts.Before(now.Add(-s.skew)) || ts.After(now.Add(s.skew)) {
		return errStale
	}
	if !hmac.Equal([]byte(s.mac(method, uri, f[1], f[2])), []byte(strings.ToLower(f[3]))) {
		return errMismatch
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if until, ok := s.seen[f[2]]; ok && now.Before(until) {
		return errReplay
	}
	if len(s.seen) >= maxNonces {
		for k, until := range s.seen {
			if !now.Before(until) {
				delete(s.seen, k)
			}
		}
		if len(s.seen) >= maxNonces {
			return errTooMany
		}
	}
	// A request signed at ts is refused as stale after ts+skew, so its
	// nonce need not be remembered longer.
	s.seen[f[2]] = ts.Add(s.skew + time.Second)
	return nil
}
