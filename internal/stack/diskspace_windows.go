package stack

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/windows"
)

// diskSpace reports the free and total bytes of the volume holding dir.
func diskSpace(dir string) (free, total int64, err error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return 0, 0, err
	}
	p, err := windows.UTF16PtrFromString(abs)
	if err != nil {
		return 0, 0, err
	}
	var avail, all, allFree uint64
	if err := windows.GetDiskFreeSpaceEx(p, &avail, &all, &allFree); err != nil {
		return 0, 0, fmt.Errorf("disk space of %s: %w", dir, err)
	}
	return int64(avail), int64(all), nil
}
