package cache

import (
	"sync"
	"sync/atomic"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// Observer hears about index changes. Eviction, an upload queue and an
// in-memory metadata cache each subscribe one (Store.Subscribe). Its
// methods are called outside Store locks, from the goroutine that made the
// change, one subscriber after the other in subscription order, and must be
// cheap: BlobAccessed runs on every cache hit. Blobs already present at
// Open are not announced: use Walk.
type Observer interface {
	BlobAdded(BlobInfo)
	BlobAccessed(d digest.Digest, at time.Time)
	BlobRemoved(d digest.Digest)
}

// observers is the Store's subscriber list. Notifying reads an immutable
// snapshot through one atomic load (no lock, no allocation on the hit
// path); Subscribe and unsubscribe copy the list under mu.
type observers struct {
	mu   sync.Mutex
	list atomic.Pointer[[]*subscription]
}

// subscription gives every Subscribe call its own identity, so the same
// Observer subscribed twice is heard twice and unsubscribed one at a time.
type subscription struct{ o Observer }

// Subscribe adds o to the observers told about every index change from now
// on, and returns the function that removes it again. Once unsubscribe has
// returned no new call to o begins (one already running may still finish);
// calling it more than once is harmless. Subscribe may be called at any
// time, also before or after Close.
func (s *Store) Subscribe(o Observer) (unsubscribe func()) {
	sub := &subscription{o}
	s.obs.mu.Lock()
	var next []*subscription
	if cur := s.obs.list.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, sub)
	s.obs.list.Store(&next)
	s.obs.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { s.obs.remove(sub) }) }
}

func (l *observers) remove(sub *subscription) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.list.Load()
	if cur == nil {
		return
	}
	next := make([]*subscription, 0, len(*cur))
	for _, x := range *cur {
		if x != sub {
			next = append(next, x)
		}
	}
	l.list.Store(&next)
}

func (l *observers) snapshot() []*subscription {
	if p := l.list.Load(); p != nil {
		return *p
	}
	return nil
}

func (l *observers) added(info BlobInfo) {
	for _, sub := range l.snapshot() {
		sub.o.BlobAdded(info)
	}
}

func (l *observers) accessed(d digest.Digest, at time.Time) {
	for _, sub := range l.snapshot() {
		sub.o.BlobAccessed(d, at)
	}
}

func (l *observers) removed(d digest.Digest) {
	for _, sub := range l.snapshot() {
		sub.o.BlobRemoved(d)
	}
}
