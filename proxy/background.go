package proxy

import (
	"errors"
	"sync"
)

// errStopping: work asked to start while the server shuts down.
var errStopping = errors.New("the mirror is shutting down")

// background counts the work that runs detached from any client (fills,
// pass-through downloads, background revalidations), which Shutdown
// cancels and waits for before the cache is closed. Once stopped it starts
// nothing more: a keep-alive connection that outlived the shutdown timeout
// may still ask, and a WaitGroup must not grow while it is waited on.
type background struct {
	mu      sync.Mutex
	stopped bool
	wg      sync.WaitGroup
}

// start counts in one piece of work, or says false once stopped; a true
// start is matched by one done.
func (b *background) start() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return false
	}
	b.wg.Add(1)
	return true
}

func (b *background) done() { b.wg.Done() }

// stopAndWait refuses new work and waits for what runs.
func (b *background) stopAndWait() {
	b.mu.Lock()
	b.stopped = true
	b.mu.Unlock()
	b.wg.Wait()
}
