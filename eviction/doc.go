// Package eviction is the policy that keeps the blob cache inside its byte
// budget: least recently used first, never touching pinned or held blobs.
//
// The package knows nothing about files, Badger or HTTP, and imports no other
// regmirror package (imports_test.go asserts this). The cache reports what it
// holds to an observer that internal/stack subscribes to it, which
// translates the calls into [Evictor.Add], [Evictor.Touch] and
// [Evictor.Remove]; the Evictor deletes through the one-method [Deleter]
// interface it owns, which internal/stack wires to the cache.
//
// # Bookkeeping
//
// Every known blob is an entry of 64 bytes in one pointer-free slice (an
// arena; freed slots are reused) and, unless it is pinned, a node of an
// intrusive doubly linked list through that slice, ordered by last access
// (front = most recently used). Keys of the cache's form ("sha256:" and 64
// hex digits) are kept as their 32 bytes, once, in the entry; an
// open-addressing table of slot numbers (4 bytes a cell, at most 3/4 full,
// seeded hash) finds them. Any other key is kept in an ordinary map. A
// million blobs thus cost ~72 MB and give the garbage collector nothing to
// scan. [Evictor.Touch], the cache-hit path, is a table lookup and a list
// move under one mutex: O(1), no allocation. Eviction takes victims from
// the back of the list; there is no scan of the whole set and no sort, except
// the single sort of the startup bulk [Evictor.Load]. Pinned entries are in
// no list, so they cost nothing per pass. The list order is the order of
// Touch calls; timestamps are compared per key only (a Touch whose time is not
// newer than the key's current one is ignored).
//
// # When it evicts
//
//   - Budget: when usage exceeds the high watermark (HighWatermark×MaxBytes,
//     default 0.95), a pass evicts down to the low watermark (default 0.85).
//     [Evictor.Add] kicks the run loop when it makes usage cross the high
//     watermark, so a burst of fills is answered promptly; otherwise the loop
//     wakes every Interval (default 30s).
//   - Free space: when Options.FreeSpace reports less than MinFree bytes free,
//     a pass evicts until MinFree plus the hysteresis gap (high−low, in bytes)
//     would be free. The deficit is measured once per pass and paid with the
//     recorded blob sizes, because the filesystem may not show freed space at
//     once (a file still open for reading keeps its blocks).
//   - [Evictor.EvictNow] (the `regmirror gc` command): one pass down to the low
//     watermark, whatever the high one says.
//   - [Evictor.EnsureFree] (after ENOSPC): until `need` more bytes fit under
//     MaxBytes and, with FreeSpace set, MinFree+need bytes are free.
//
// Passes are serialised. Deletion runs outside the mutex, one blob at a time,
// so the hit path is never blocked behind disk I/O.
//
// # What is never evicted
//
//   - Pinned blobs ([Entry.Pinned], [Evictor.SetPinned]), even if the cache
//     then stays over budget: the pass logs a warning and [Stats.Stuck] says
//     so. A pin belongs to the key, so it may precede the blob and it
//     survives [Evictor.Remove]; only SetPinned(key, false) drops it.
//   - Held keys ([Evictor.Hold]): the proxy holds a digest while a fill for it
//     is in progress and while it commits. Hold waits for a Delete of that key
//     already in flight, so after Hold returns no Delete of the key runs until
//     the release. Reads in progress are not holds: the OS keeps an open
//     file's bytes readable after unlink.
//
// # Delete errors
//
// A Delete that fails with an error for which Options.IsNotFound is true
// (default: errors.Is(err, fs.ErrNotExist)) means the blob is already gone:
// the entry is dropped. Any other error is logged and counted; the entry is
// kept at the least recently used end and retried by the next pass, never
// twice within one pass.
package eviction
