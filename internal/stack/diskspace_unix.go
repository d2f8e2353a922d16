//go:build unix

package stack

import (
	"fmt"
	"syscall"
)

// diskSpace reports the free and total bytes of the filesystem holding dir.
func diskSpace(dir string) (free, total int64, err error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(fs.Bavail) * int64(fs.Bsize), int64(fs.Blocks) * int64(fs.Bsize), nil
}
