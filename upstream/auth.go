package upstream

import (
	"container/list"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// lock is a mutex whose acquisition can be abandoned with the context.
type lock chan struct{}

func newLock() lock { return make(lock, 1) }

func (l lock) acquire(ctx context.Context) error {
	select {
	case l <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l lock) release() { <-l }

// challenge returns the registry's /v2/ challenge, pinging once (with
// retries) if none is cached. Concurrent callers share one ping.
func (r *Registry) challenge(ctx context.Context) (*transport.Challenge, error) {
	r.mu.Lock()
	ch := r.ch
	r.mu.Unlock()
	if ch != nil {
		return ch, nil
	}
	if err := r.pinger.acquire(ctx); err != nil {
		return nil, classify(ctx, "ping", err)
	}
	defer r.pinger.release()
	r.mu.Lock()
	ch = r.ch
	r.mu.Unlock()
	if ch != nil {
		return ch, nil
	}
	err := r.retry(ctx, "ping", func() error {
		var err error
		ch, err = transport.Ping(ctx, r.reg, r.rt)
		return err
	})
	if err != nil {
		var terr *transport.Error
		if ctx.Err() == nil && errors.As(err, &terr) && terr.StatusCode != 429 {
			// Whatever a /v2/ probe answers (404 included), the registry is unusable.
			return nil, fmt.Errorf("%w: ping: %w", ErrUnavailable, err)
		}
		return nil, classify(ctx, "ping", err)
	}
	r.log.Debug("upstream pinged", "scheme", ch.Scheme, "realm", ch.Parameters["realm"])
	r.mu.Lock()
	r.ch = ch
	r.mu.Unlock()
	return ch, nil
}

// dropChallenge forgets ch (if still current) so that the next request pings again.
func (r *Registry) dropChallenge(ch *transport.Challenge) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ch == ch {
		r.ch = nil
	}
}

// forget is called after a 401 answered a request. A bearer
// token is refreshed by the caller (it passes the header it sent as stale); for a basic or
// anonymous registry the challenge itself may have changed, so ping again.
func (r *Registry) forget() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ch != nil && strings.ToLower(r.ch.Scheme) != "bearer" {
		r.ch = nil
	}
}

// authorization returns the Authorization header value for scope ("" for
// none), never the stale one.
func (r *Registry) authorization(ctx context.Context, scope, stale string) (string, error) {
	ch, err := r.challenge(ctx)
	if err != nil {
		return "", err
	}
	switch strings.ToLower(ch.Scheme) {
	case "":
		return "", nil // the registry needs no authentication
	case "basic":
		return r.basic(ctx)
	case "bearer":
		return r.bearer(ctx, ch, scope, stale)
	default:
		r.dropChallenge(ch)
		return "", fmt.Errorf("%w: unsupported authentication challenge %q", ErrUnavailable, ch.Scheme)
	}
}

func (r *Registry) basic(ctx context.Context) (string, error) {
	cfg, err := authn.Authorization(ctx, r.auth)
	if err != nil {
		return "", fmt.Errorf("%w: credentials: %w", ErrUnauthorized, err)
	}
	switch {
	case cfg.Auth != "":
		return "Basic " + cfg.Auth, nil
	case cfg.Username != "" || cfg.Password != "":
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.Username+":"+cfg.Password)), nil
	case cfg.RegistryToken != "":
		return "Bearer " + cfg.RegistryToken, nil
	}
	return "", nil
}

// bearer returns a token for scope from the cache, or exchanges a new one.
// Concurrent callers for one scope share one exchange.
func (r *Registry) bearer(ctx context.Context, ch *transport.Challenge, scope, stale string) (string, error) {
	e := r.tokens.get(scope)
	if err := e.lock.acquire(ctx); err != nil {
		return "", classify(ctx, "token", err)
	}
	defer e.lock.release()
	if e.header != "" && e.header != stale && r.opts.Now().Before(e.refreshAt) {
		return e.header, nil
	}
	if err := r.checkRealm(ch); err != nil {
		e.header = ""
		r.dropChallenge(ch)
		r.log.Warn("upstream token realm refused", "err", err)
		return "", err
	}
	start := r.opts.Now()
	var tok *transport.Token
	err := r.retry(ctx, "token "+scope, func() error {
		var err error
		tok, err = transport.Exchange(ctx, r.reg, r.auth, r.rt, []string{scope}, ch)
		return err
	})
	r.stats.token(err)
	if err != nil {
		e.header = ""
		r.dropChallenge(ch)
		return "", classify(ctx, "token exchange for "+scope, err)
	}
	t := tok.Token
	if t == "" {
		t = tok.AccessToken
	}
	life := time.Duration(tok.ExpiresIn) * time.Second
	if life <= 0 {
		life = 60 * time.Second // the token spec's default
	}
	e.header = "Bearer " + t
	e.refreshAt = start.Add(life - min(30*time.Second, life/10))
	r.log.Debug("upstream token fetched", "scope", scope, "expires_in_s", life.Seconds())
	return e.header, nil
}

// checkRealm applies the rules for where the registry's credentials may go
// in a token exchange: the realm must be https, or http when the registry
// itself is reached over http; a realm on another host or port than the
// registry (Docker Hub's auth.docker.io) gets credentials only over https;
// and its address passes the same guard as every connection (checkURL
// here, the dialer at connect time). go-containerregistry's own realm
// checks run after these.
func (r *Registry) checkRealm(ch *transport.Challenge) error {
	realm := ch.Parameters["realm"]
	u, err := url.Parse(realm)
	if err != nil || u.Host == "" {
		return refuse("token realm refused", "unparsable realm %q", realm)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && r.scheme == "http":
	default:
		return refuse("token realm refused: not https", "realm %q for a registry reached over %s", u.Redacted(), r.scheme)
	}
	own := &url.URL{Scheme: r.scheme, Host: r.reg.RegistryStr()}
	if u.Scheme == "http" && !sameOrigin(u, own) && r.auth != authn.Anonymous {
		return refuse("token realm refused: credentials would travel in clear to another host",
			"realm %q is not the registry %s", u.Redacted(), own)
	}
	return r.addrs.checkURL(u)
}

// tokenEntry is one scope's token; lock is held during its exchange.
type tokenEntry struct {
	lock      lock
	header    string // "Bearer <token>"
	refreshAt time.Time
}

// tokenCache is a bounded LRU of tokenEntry by scope.
type tokenCache struct {
	mu  sync.Mutex
	max int
	ll  *list.List // of *tokenItem, most recent first
	m   map[string]*list.Element
}

type tokenItem struct {
	scope string
	e     *tokenEntry
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, ll: list.New(), m: map[string]*list.Element{}}
}

// get returns scope's entry, creating it (and evicting the least recently
// used beyond max) if needed.
func (c *tokenCache) get(scope string) *tokenEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[scope]; ok {
		c.ll.MoveToFront(el)
		return el.Value.(*tokenItem).e
	}
	e := &tokenEntry{lock: newLock()}
	c.m[scope] = c.ll.PushFront(&tokenItem{scope: scope, e: e})
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.m, last.Value.(*tokenItem).scope)
	}
	return e
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
