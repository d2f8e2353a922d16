//go:build unix

package cache

import "syscall"

// restrictUmask clears the group and other bits from the process umask.
// Badger creates its tables, value logs and lock file with mode 0666 and
// has no option to change that, throughout the index's life (compactions
// make new tables), so the umask is the one place that reaches them. It is
// process-wide, and only ever narrows: regmirror creates no file meant for
// other users (an export archive can be chmod-ed by its owner).
func restrictUmask() {
	old := syscall.Umask(0o077)
	syscall.Umask(old | 0o077)
}
