// Package testclock is a clock that tests move by hand: pass Clock.Now
// where a component takes a clock (upstream.Options.Now,
// testupstream.WithClock, access's Now options) and Advance it instead of
// sleeping, so that nothing waits on the real clock.
package testclock

import (
	"sync"
	"time"
)

// Clock is safe for concurrent use. Its zero value reads the zero time;
// New starts it at a fixed date.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a Clock at 2026-01-01 00:00 UTC.
func New() *Clock { return &Clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

// At returns a Clock at t.
func At(t time.Time) *Clock { return &Clock{t: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
