package testupstream

import (
	"fmt"
	"net/http"
)

// RateLimitWindow is the window the fake announces, as Docker Hub does
// (six hours, in seconds).
const RateLimitWindow = 21600

// rateLimit is Docker Hub's pull budget as the fake plays it.
type rateLimit struct {
	on        bool
	limit     int
	remaining int
}

// SetRateLimit makes manifest answers carry Docker Hub's headers
// (RateLimit-Limit: "<limit>;w=21600", RateLimit-Remaining: "<n>;w=21600")
// with a budget of limit that every manifest GET counts down (HEADs are
// free, as on Docker Hub). Nothing is refused when it reaches 0: tests that
// want 429s use SetStatus. limit 0 turns the headers off.
func (s *Server) SetRateLimit(limit int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateLimit = rateLimit{on: limit > 0, limit: limit, remaining: limit}
}

// RateLimitRemaining is the budget left.
func (s *Server) RateLimitRemaining() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rateLimit.remaining
}

// rateLimitHeaders counts r against the budget and sets the headers.
func (s *Server) rateLimitHeaders(w http.ResponseWriter, r *http.Request) {
	if !isManifestPath(r.URL.Path) {
		return
	}
	s.mu.Lock()
	rl := &s.rateLimit
	if !rl.on {
		s.mu.Unlock()
		return
	}
	if r.Method == http.MethodGet && rl.remaining > 0 {
		rl.remaining--
	}
	limit, remaining := rl.limit, rl.remaining
	s.mu.Unlock()
	w.Header().Set("RateLimit-Limit", fmt.Sprintf("%d;w=%d", limit, RateLimitWindow))
	w.Header().Set("RateLimit-Remaining", fmt.Sprintf("%d;w=%d", remaining, RateLimitWindow))
}
