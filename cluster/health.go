package cluster

import (
	"sort"
	"sync"
	"time"
)

// PeerState is one peer as the health checks see it.
type PeerState struct {
	URL string
	// Up: the peer answered its last ping and no request to it has failed
	// since.
	Up bool
	// Since is when Up last changed (zero: never answered).
	Since time.Time
	// Err is why it is down, if it was ever up or pinged.
	Err string
}

// health tracks which peers count for ownership. A peer is down until it
// answers a ping; an error talking to it marks it down at once; the next
// ping it answers brings it back.
type health struct {
	self string
	now  func() time.Time

	mu    sync.Mutex
	peers map[string]*PeerState
	order []string // peer URLs, sorted
}

func newHealth(self string, peers []string, now func() time.Time) *health {
	h := &health{self: self, now: now, peers: map[string]*PeerState{}}
	for _, p := range peers {
		if p == self || h.peers[p] != nil {
			continue
		}
		h.peers[p] = &PeerState{URL: p, Err: "not pinged yet"}
		h.order = append(h.order, p)
	}
	sort.Strings(h.order)
	return h
}

// nodes returns this node and the peers that are up: the set ownership is
// computed over.
func (h *health) nodes() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := []string{h.self}
	for _, p := range h.order {
		if h.peers[p].Up {
			out = append(out, p)
		}
	}
	return out
}

// down marks peer down after err; it reports whether that changed its state.
func (h *health) down(peer string, err error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.peers[peer]
	if st == nil {
		return false
	}
	changed := st.Up
	if changed {
		st.Since = h.now()
	}
	st.Up, st.Err = false, err.Error()
	return changed
}

// up marks peer up after it answered; it reports whether that changed it.
func (h *health) up(peer string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.peers[peer]
	if st == nil || st.Up {
		return false
	}
	st.Up, st.Err, st.Since = true, "", h.now()
	return true
}

// states returns every peer's state, sorted by URL.
func (h *health) states() []PeerState {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]PeerState, 0, len(h.order))
	for _, p := range h.order {
		out = append(out, *h.peers[p])
	}
	return out
}

// peerURLs lists the peers, sorted.
func (h *health) peerURLs() []string { return h.order }
