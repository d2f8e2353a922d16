package proxy

import (
	"sync"
	"time"
)

// oncePerMinute lets a warning that a flood would repeat (a refusal over a
// cap or budget) be logged at most once a minute. The zero value is ready.
type oncePerMinute struct {
	mu   sync.Mutex
	last time.Time
}

// due reports whether the warning may be logged at now, and if so counts
// it as logged.
func (o *oncePerMinute) due(now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if now.Sub(o.last) <= time.Minute {
		return false
	}
	o.last = now
	return true
}
