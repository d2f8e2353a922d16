package eviction

import (
	"fmt"

	"github.com/dustin/go-humanize"
)

// CanFit reports whether a blob of size bytes could be cached at all. With
// every evictable blob gone it must fit under the low watermark beside what
// cannot be evicted (pinned and held blobs), since a pass would otherwise
// evict everything and then the blob itself; and, when FreeSpace is set,
// the filesystem must have room for it while keeping MinFree:
// size ≤ free + evictable − MinFree. CanFit deletes nothing. Its error
// wraps [ErrNoRoom] and names the limit the blob exceeds. The proxy asks
// before a fill writes a byte, and streams a blob that cannot fit to its
// clients without caching it.
func (e *Evictor) CanFit(size int64) error {
	if size <= 0 {
		return nil
	}
	free, haveFree := e.readFree()
	e.mu.Lock()
	evictable := e.evictableLocked()
	unevictable := e.bytes - evictable
	e.mu.Unlock()
	if room := e.lowBytes - unevictable; size > room {
		return fmt.Errorf("%w: %s is more than the %s the budget can hold under its low watermark (%s, of which %s pinned or held)",
			ErrNoRoom, humanize.IBytes(uint64(size)), humanize.IBytes(uint64(max(room, 0))), humanize.IBytes(uint64(e.lowBytes)), humanize.IBytes(uint64(unevictable)))
	}
	if haveFree {
		if room := free + evictable - e.minFree; size > room {
			return fmt.Errorf("%w: %s is more than eviction could free on the filesystem (%s free + %s evictable − %s min free)",
				ErrNoRoom, humanize.IBytes(uint64(size)), humanize.IBytes(uint64(max(free, 0))), humanize.IBytes(uint64(evictable)), humanize.IBytes(uint64(e.minFree)))
		}
	}
	return nil
}

// readFree returns the filesystem's free bytes, when FreeSpace is set and
// answers.
func (e *Evictor) readFree() (int64, bool) {
	if e.freeSpace == nil {
		return 0, false
	}
	f, err := e.freeSpace()
	if err != nil {
		e.log.Warn("eviction: cannot read free space; min_free ignored this pass", "err", err)
		return 0, false
	}
	return f, true
}

// evictableLocked is the usage a pass could delete: everything counted
// except pinned blobs and held ones.
func (e *Evictor) evictableLocked() int64 {
	n := e.bytes - e.pinnedBytes
	for key := range e.holds {
		if i := e.lookup(key); i != 0 {
			if x := e.arena.at(i); !x.is(flagPinned) && !x.is(flagDeleting) {
				n -= x.size
			}
		}
	}
	return n
}

// reachable checks a pass's targets before it deletes anything: a pass
// never deletes toward a target it cannot reach. limit is the usage to get
// under, deficit the bytes to free on the filesystem. The budget target of
// an automatic pass is the one exception, kept by the caller: when pinned
// blobs alone exceed the low watermark, evicting every unpinned blob is
// still what keeps the cache from growing.
func (e *Evictor) reachable(limit, deficit int64) (limitOK, deficitOK bool, evictable int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	evictable = e.evictableLocked()
	return e.bytes-evictable <= limit, deficit <= evictable, evictable
}
