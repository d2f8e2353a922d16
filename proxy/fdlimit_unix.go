//go:build unix

package proxy

import "syscall"

// descriptorLimit is the process's soft RLIMIT_NOFILE (which the Go runtime
// raises to the hard limit at start), or 0 if unknown or unlimited.
func descriptorLimit() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<40 {
		return 0
	}
	return uint64(r.Cur)
}
