package cache

import (
	"fmt"
	"log/slog"
	"sync"
	"syscall"
)

// The index's reserve of free space. Badger writes its memtable WAL (.mem)
// and value log through mmapped sparse files: when the filesystem is full a
// store into such a page is not an error but SIGBUS, which kills the
// process. Blob writes are the only large consumer of the data dir, so they
// stop (with ErrNoSpace, which callers already treat as a full disk) while
// the filesystem still has Options.IndexReserve bytes free.

// DefaultIndexReserve is enough for Badger (see badgerOptions) to fill its
// active memtable's WAL while the previous one is flushed to a table, for
// one value-log file, and a margin for compaction and the small files:
// 2×16 MiB + 64 MiB + 16 MiB.
const DefaultIndexReserve = 2*memTableSize + valueLogFileSize + 16<<20

// spaceCheckEvery bounds how many bytes blob writes may add, in total over
// every Writer, between two statfs calls.
const spaceCheckEvery = 4 << 20

// spaceGuard rations the data dir's free space above the reserve among
// blob writes. A nil guard allows everything.
type spaceGuard struct {
	reserve int64
	free    func() (int64, error) // bytes available to this process

	mu     sync.Mutex
	budget int64 // bytes that may be written before the next statfs
}

// newSpaceGuard guards the filesystem of indexDir against writes into
// tmpDir, keeping reserve bytes free (0: the default, see indexReserve).
// It returns nil when reserve < 0, when free space cannot be measured on
// this platform, or when tmp/ is on another filesystem than the index
// (blob writes cannot starve it then).
func newSpaceGuard(tmpDir, indexDir string, reserve int64, log *slog.Logger) *spaceGuard {
	if reserve < 0 || !sameFilesystem(tmpDir, indexDir) {
		return nil
	}
	_, total, err := fsSpace(indexDir)
	if err != nil {
		return nil
	}
	if reserve == 0 {
		reserve = indexReserve(total)
		if reserve < DefaultIndexReserve {
			log.Warn("the data dir's filesystem is small: blob writes leave half of it free for the index, not the full reserve",
				"filesystem_bytes", total, "reserve_bytes", reserve, "full_reserve_bytes", int64(DefaultIndexReserve))
		}
	}
	return &spaceGuard{reserve: reserve, free: func() (int64, error) {
		free, _, err := fsSpace(indexDir)
		return free, err
	}}
}

// indexReserve is the default reserve on a filesystem of total bytes:
// DefaultIndexReserve, or half the filesystem if that is less, so that a
// filesystem of a few hundred MiB still holds a cache (its index is then
// protected against all but the largest bursts of index writes).
func indexReserve(total int64) int64 {
	return min(DefaultIndexReserve, total/2)
}

// take accounts for n bytes about to be written; n = 0 asks only whether
// writing may start. Once the known budget is spent it measures the free
// space again. An error wraps ErrNoSpace (and syscall.ENOSPC), and the next
// call measures again, so a caller that freed space may retry at once.
func (g *spaceGuard) take(n int64) error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.budget > 0 && g.budget >= n {
		g.budget -= n
		return nil
	}
	free, err := g.free()
	if err != nil {
		// Unmeasurable now: let the write itself report a full disk.
		return nil
	}
	avail := free - g.reserve
	if avail <= 0 || avail < n {
		g.budget = 0
		return fmt.Errorf("%w: %d bytes free, %d kept for the index: %w", ErrNoSpace, free, g.reserve, syscall.ENOSPC)
	}
	g.budget = min(avail, max(spaceCheckEvery, n)) - n
	return nil
}

// IndexReserve is the free space blob writes leave for the index on the
// data dir's filesystem (0 when unchecked): eviction must keep at least
// that free, or it would count as room what downloads may not use.
func (s *Store) IndexReserve() int64 {
	if s.space == nil {
		return 0
	}
	return s.space.reserve
}
