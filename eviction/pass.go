package eviction

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

type passKind int

const (
	passAuto   passKind = iota // Run: only when over the high watermark or under MinFree
	passNow                    // EvictNow: down to the low watermark
	passEnsure                 // EnsureFree: make room for need bytes
)

// parked is an entry whose Delete failed in this pass, and its last access
// when it was chosen (a Touch since then sends it to the front).
type parked struct {
	i    slot
	last int64
}

// passState is one pass: its goal, set by plan, and its progress.
type passState struct {
	kind passKind
	need int64 // passEnsure: the room asked for

	free     int64 // the filesystem's free bytes when the pass began
	haveFree bool
	before   int64 // usage when the pass began
	limit    int64 // usage to get under
	deficit  int64 // bytes to free for MinFree
	reasons  []string

	res    Result
	freed  int64
	failed []parked
	stuck  bool
}

// victim is an entry a pass chose and is deleting.
type victim struct {
	i    slot
	key  string
	size int64
	last int64 // its last access when chosen
}

// pass runs one eviction pass: while usage > limit or fewer than deficit
// bytes have been freed, delete the least recently used evictable entry.
func (e *Evictor) pass(ctx context.Context, kind passKind, need int64) (Result, error) {
	select {
	case e.passSem <- struct{}{}:
	case <-ctx.Done():
		return Result{Remaining: e.Stats().Bytes}, ctx.Err()
	}
	defer func() { <-e.passSem }()
	start := time.Now()

	p := e.plan(kind, need)
	if err := e.checkReachable(p); err != nil {
		return p.res, err
	}
	err := e.evictUntilDone(ctx, p)
	wasStuck, pinnedBytes, hook := e.endPass(p, err)

	e.logPass(kind, p.reasons, p.res, p.before, pinnedBytes, time.Since(start), p.stuck, wasStuck, err)
	if hook != nil {
		hook(p.res)
	}
	if kind == passEnsure && p.stuck && err == nil {
		err = fmt.Errorf("%w: everything left is pinned, held or failing to delete (usage %s, budget %s, need %s)",
			ErrNoRoom, humanize.IBytes(uint64(p.res.Remaining)), humanize.IBytes(uint64(e.maxBytes)), humanize.IBytes(uint64(need)))
	}
	return p.res, err
}

// plan sets the pass's goal: the usage to get under and the bytes to free
// on the filesystem, with the reasons for the log.
func (e *Evictor) plan(kind passKind, need int64) *passState {
	p := &passState{kind: kind, need: need, limit: math.MaxInt64}
	p.free, p.haveFree = e.readFree()
	e.mu.Lock()
	p.before = e.bytes
	e.mu.Unlock()

	underMinFree := p.haveFree && p.free < e.minFree
	gap := e.highBytes - e.lowBytes
	switch kind {
	case passAuto:
		if p.before > e.highBytes {
			p.limit = e.lowBytes
			p.reasons = append(p.reasons, "over high watermark")
		}
		if underMinFree {
			p.deficit = e.minFree + gap - p.free
			p.reasons = append(p.reasons, "under min free")
		}
	case passNow:
		p.limit = e.lowBytes
		p.reasons = append(p.reasons, "evict now")
		if underMinFree {
			p.deficit = e.minFree + gap - p.free
			p.reasons = append(p.reasons, "under min free")
		}
	case passEnsure:
		p.limit = e.maxBytes - need
		p.reasons = append(p.reasons, "ensure free "+humanize.IBytes(uint64(need)))
		if p.haveFree && e.minFree+need > p.free {
			p.deficit = e.minFree + need - p.free
		}
	}
	return p
}

// checkReachable makes sure a pass never deletes toward a target that
// deleting everything evictable would not reach (room.go): EnsureFree then
// fails with ErrNoRoom before deleting anything; another pass drops an
// unreachable MinFree goal (and says so) but keeps the budget goal.
func (e *Evictor) checkReachable(p *passState) error {
	limitOK, deficitOK, evictable := e.reachable(p.limit, p.deficit)
	if p.kind == passEnsure && (!limitOK || !deficitOK) {
		p.res.Remaining = e.Stats().Bytes
		return fmt.Errorf("%w: need %s; evicting all %s evictable would not make it (usage %s, budget %s, min free %s, free %s)",
			ErrNoRoom, humanize.IBytes(uint64(p.need)), humanize.IBytes(uint64(evictable)), humanize.IBytes(uint64(p.res.Remaining)),
			humanize.IBytes(uint64(e.maxBytes)), humanize.IBytes(uint64(e.minFree)), humanize.IBytes(uint64(max(p.free, 0))))
	}
	if !deficitOK {
		e.log.Warn("eviction: min_free cannot be reached by evicting everything evictable; not evicting for it",
			"deficit", humanize.IBytes(uint64(p.deficit)), "evictable", humanize.IBytes(uint64(evictable)))
		p.deficit = 0
		p.stuck = true
	}
	return nil
}

// evictUntilDone deletes victims, one at a time and outside the lock, until
// the goal is met, nothing evictable is left, or ctx ends (its error).
func (e *Evictor) evictUntilDone(ctx context.Context, p *passState) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		v, ok := e.choose(p)
		if !ok {
			return nil
		}
		derr := e.del.Delete(v.key)
		gone := e.settle(p, v, derr)
		switch {
		case derr == nil:
		case gone:
			e.log.Info("eviction: blob already gone", "key", v.key, "err", derr)
		default:
			e.log.Error("eviction: delete failed; kept for the next pass", "key", v.key, "err", derr)
		}
	}
}

// choose takes the next victim out of the list and marks its Delete in
// flight, unless the goal is met (or nothing evictable is left: stuck).
func (e *Evictor) choose(p *passState) (victim, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.bytes <= p.limit && p.freed >= p.deficit {
		return victim{}, false
	}
	i, key := e.victimLocked()
	if i == 0 {
		p.stuck = true
		return victim{}, false
	}
	x := e.arena.at(i)
	e.arena.remove(i)
	e.count(x, -1)
	x.set(flagDeleting, true)
	e.inflight[key] = struct{}{}
	return victim{i: i, key: key, size: x.size, last: x.last}, true
}

// settle records how a victim's Delete went and reports whether the blob
// is gone. A gone blob's entry is dropped; a failed one is counted again
// and parked until the pass ends. An entry removed or replaced while its
// Delete ran is no longer its key's: its slot is only freed.
func (e *Evictor) settle(p *passState, v victim, derr error) (gone bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.inflight, v.key)
	x := e.arena.at(v.i)
	x.set(flagDeleting, false)
	current := !x.is(flagRemoved)
	gone = derr == nil || e.isNotFound(derr)
	switch {
	case gone:
		p.freed += v.size
		if current {
			e.index.remove(&e.arena, v.i)
			if x.is(flagPinned) { // pinned while its Delete ran: keep the wish
				e.pendingPins[v.key] = struct{}{}
			}
		}
		e.arena.release(v.i)
		if derr == nil {
			p.res.Blobs++
			p.res.Bytes += v.size
			e.evictedBlobs++
			e.evictedBytes += v.size
		} else {
			e.vanished++
		}
	default:
		p.res.Failed++
		e.deleteErrors++
		if current {
			e.count(x, 1)
			x.set(flagParked, true)
			p.failed = append(p.failed, parked{v.i, v.last})
		} else {
			e.arena.release(v.i)
		}
	}
	if e.waiters > 0 {
		e.inflightEnd.Broadcast()
	}
	return gone
}

// endPass puts failed entries back where they were (least recently used
// end, in their order) unless touched meanwhile, so the next pass retries
// them, and records the pass. It returns what the log and the hook need.
func (e *Evictor) endPass(p *passState, err error) (wasStuck bool, pinnedBytes int64, hook func(Result)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k := len(p.failed) - 1; k >= 0; k-- {
		i := p.failed[k].i
		x := e.arena.at(i)
		if x.is(flagRemoved) {
			e.arena.release(i)
			continue
		}
		if !x.is(flagParked) {
			continue
		}
		x.set(flagParked, false)
		if x.is(flagPinned) {
			continue
		}
		if x.last != p.failed[k].last {
			e.arena.pushFront(i)
		} else {
			e.arena.pushBack(i)
		}
	}
	p.res.Remaining = e.bytes
	wasStuck = e.stuck
	if err == nil {
		e.stuck = p.stuck
	}
	e.passes++
	return wasStuck, e.pinnedBytes, e.onPass
}

// victimLocked returns the least recently used entry that is not held, and
// its key, or 0. Pinned, in-flight and parked entries are not in the list
// at all; held keys are few (fills in progress), so skipping them is cheap.
func (e *Evictor) victimLocked() (slot, string) {
	for i := e.arena.back(); i != 0; i = e.arena.towardFront(i) {
		key := e.keyOf(i)
		if len(e.holds) == 0 || e.holds[key] == 0 {
			return i, key
		}
	}
	return 0, ""
}

func (e *Evictor) logPass(kind passKind, reasons []string, res Result, before, pinned int64, d time.Duration, stuck, wasStuck bool, err error) {
	level := slog.LevelDebug
	msg := "eviction pass"
	if res.Blobs > 0 || res.Failed > 0 || kind != passAuto {
		level = slog.LevelInfo
	}
	if stuck && (!wasStuck || kind != passAuto) {
		level = slog.LevelWarn
		msg = "eviction pass stopped short: everything left is pinned, held or failing to delete"
	}
	if err != nil {
		msg = "eviction pass interrupted"
	}
	if !e.log.Enabled(context.Background(), level) {
		return
	}
	reason := strings.Join(reasons, ", ")
	if reason == "" {
		reason = "nothing to do"
	}
	e.log.Log(context.Background(), level, msg,
		"reason", reason,
		"blobs", res.Blobs,
		"bytes", humanize.IBytes(uint64(res.Bytes)),
		"failed", res.Failed,
		"duration_s", d.Seconds(),
		"before", humanize.IBytes(uint64(before)),
		"after", humanize.IBytes(uint64(res.Remaining)),
		"budget", humanize.IBytes(uint64(e.maxBytes)),
		"low", humanize.IBytes(uint64(e.lowBytes)),
		"high", humanize.IBytes(uint64(e.highBytes)),
		"pinned", humanize.IBytes(uint64(pinned)),
		"stuck", stuck,
	)
}
