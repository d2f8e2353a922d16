package testupstream

import "net/http"

// GateManifestHeads installs a closed gate that holds every manifest HEAD
// (after it is counted, before it is answered) until Open, replacing (and
// opening) an earlier one. Tests use it to keep a tag revalidation in
// flight while clients pile up behind it.
func (s *Server) GateManifestHeads() *Gate {
	g := &Gate{opened: make(chan struct{}), arrived: make(chan struct{})}
	s.mu.Lock()
	old := s.headGate
	s.headGate = g
	s.mu.Unlock()
	if old != nil {
		old.Open()
	}
	return g
}

// holdManifestHead waits at the manifest-HEAD gate, if one is installed; it
// returns false if the request ended or the server closed first.
func (s *Server) holdManifestHead(r *http.Request) bool {
	if r.Method != http.MethodHead || !isManifestPath(r.URL.Path) {
		return true
	}
	s.mu.Lock()
	g := s.headGate
	s.mu.Unlock()
	if g == nil {
		return true
	}
	g.arrive()
	select {
	case <-g.opened:
		return true
	case <-r.Context().Done():
	case <-s.closing:
	}
	return false
}
