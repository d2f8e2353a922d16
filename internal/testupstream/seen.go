package testupstream

import (
	"net/http"
	"strings"
	"sync"
)

// seenHeaders remembers every Authorization header either listener was
// sent, so that tests can prove a client's credentials never reach
// upstream through the mirror.
type seenHeaders struct {
	mu   sync.Mutex
	auth []string
}

func (h *seenHeaders) record(r *http.Request) {
	if a := r.Header.Get("Authorization"); a != "" {
		h.mu.Lock()
		h.auth = append(h.auth, a)
		h.mu.Unlock()
	}
}

// SawAuthorization reports whether any request to the registry or the
// token server carried an Authorization header containing s.
func (s *Server) SawAuthorization(sub string) bool {
	s.seen.mu.Lock()
	defer s.seen.mu.Unlock()
	for _, a := range s.seen.auth {
		if strings.Contains(a, sub) {
			return true
		}
	}
	return false
}

// Requests is the number of registry requests counted so far (all methods
// and paths; token requests are TokenRequests).
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.counts {
		n += c
	}
	return n
}
