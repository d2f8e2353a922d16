//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package cache

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// lockDir takes an exclusive flock(2) on the data directory itself, held
// until the returned Closer is closed. flock locks belong to the open file
// description, so a second Store in the same process is refused too.
func lockDir(dir string) (io.Closer, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("cache: open data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("cache: data dir %s is in use by another process or Store: %w", dir, ErrBusy)
		}
		return nil, fmt.Errorf("cache: lock data dir %s: %w", dir, err)
	}
	return f, nil // closing the descriptor releases the lock
}
