package upstream

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RateLimit is a registry's pull budget as it last announced it, from
// Docker Hub's RateLimit-Limit and RateLimit-Remaining headers
// ("100;w=21600": 100 pulls per 21600 s window).
type RateLimit struct {
	Limit     int
	Remaining int
	// Window is the period the budget covers (0 when the header gave none).
	Window time.Duration
	// At is when the headers were read.
	At time.Time
}

// Stats are a registry's own figures since it was created.
type Stats struct {
	// TokenFetches counts bearer token exchanges, TokenFailures those that
	// failed.
	TokenFetches, TokenFailures int64
	// RateLimit is the last budget read; HasRateLimit is false until a
	// response carried the headers (most registries never send them).
	RateLimit    RateLimit
	HasRateLimit bool
}

// Stats returns the registry's figures now.
func (r *Registry) Stats() Stats {
	r.stats.mu.Lock()
	defer r.stats.mu.Unlock()
	return r.stats.Stats
}

// stats is the mutable side of Stats.
type stats struct {
	mu sync.Mutex
	Stats
}

func (s *stats) token(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.TokenFetches++
	if err != nil {
		s.TokenFailures++
	}
}

// sawResponse records the rate-limit headers of a response, if any.
func (s *stats) sawResponse(h http.Header, now time.Time) {
	limit, window, ok := parseRateLimitHeader(h.Get("RateLimit-Limit"))
	if !ok {
		return
	}
	remaining, _, ok := parseRateLimitHeader(h.Get("RateLimit-Remaining"))
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.RateLimit = RateLimit{Limit: limit, Remaining: remaining, Window: window, At: now}
	s.HasRateLimit = true
}

// parseRateLimitHeader reads "100;w=21600" (or a bare "100").
func parseRateLimitHeader(v string) (n int, window time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, 0, false
	}
	num, params, _ := strings.Cut(v, ";")
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n < 0 {
		return 0, 0, false
	}
	for _, p := range strings.Split(params, ";") {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		if k == "w" {
			if secs, err := strconv.Atoi(val); err == nil && secs > 0 {
				window = time.Duration(secs) * time.Second
			}
		}
	}
	return n, window, true
}

// Stats returns the registry's figures: the primary's rate-limit reading
// (mirrors are not Docker Hub's budget), and the token exchanges of every
// source.
func (f *Failover) Stats() Stats {
	st := f.primary().Stats()
	for _, r := range f.sources[:len(f.sources)-1] {
		ms := r.Stats()
		st.TokenFetches += ms.TokenFetches
		st.TokenFailures += ms.TokenFailures
	}
	return st
}
