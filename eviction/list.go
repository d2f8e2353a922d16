package eviction

// slot is an entry's position in the arena. Slot 0 is the list's sentinel,
// so 0 also means "none" wherever a slot is looked up.
type slot = int32

// entry is one blob: 64 bytes in one pointer-free slice, so a million of
// them cost 64 MB and nothing for the garbage collector to scan. It is its
// own list node (an intrusive list over slots), so the hit path neither
// allocates nor chases a pointer.
type entry struct {
	key  [32]byte // the sha256 digest of a digest key; unused for a raw key (see keyIndex)
	size int64
	last int64 // last access, Unix nanoseconds

	prev, next slot // unlinked: both -1

	flags uint8
}

const (
	flagPinned uint8 = 1 << iota
	// flagDeleting: chosen by a pass, Delete in flight; not counted in usage.
	flagDeleting
	// flagParked: Delete failed in the current pass; counted in usage but
	// kept out of the list until the pass ends, so the pass does not retry it.
	flagParked
	// flagRaw: the key is not a sha256 digest; keyIndex keeps its text.
	flagRaw
	// flagRemoved: no longer the entry of its key (Remove, or replaced by
	// an Add while its Delete ran); the pass that owns it frees the slot.
	flagRemoved
)

func (x *entry) is(f uint8) bool { return x.flags&f != 0 }

func (x *entry) set(f uint8, on bool) {
	if on {
		x.flags |= f
	} else {
		x.flags &^= f
	}
}

func (x *entry) linked() bool { return x.next >= 0 }

// arena holds every entry, and the least-recently-used order as a circular
// doubly linked list through them: slots[0] is the sentinel, its next the
// most recently used entry, its prev the least recently used. Freed slots
// are chained through next (as -2-next) and reused. Pointers into slots are
// valid only until the next alloc.
type arena struct {
	slots []entry
	free  slot // first freed slot, 0 if none
	len   int  // entries in the list
}

func (a *arena) init() {
	a.slots = []entry{{prev: 0, next: 0}}
}

func (a *arena) at(i slot) *entry { return &a.slots[i] }

// grow makes room for n more entries without reallocating (Load's bulk).
func (a *arena) grow(n int) {
	if free := cap(a.slots) - len(a.slots); n > free {
		s := make([]entry, len(a.slots), len(a.slots)+n)
		copy(s, a.slots)
		a.slots = s
	}
}

// alloc returns a fresh unlinked slot.
func (a *arena) alloc() slot {
	if a.free != 0 {
		i := a.free
		a.free = -2 - a.slots[i].next
		a.slots[i] = entry{prev: -1, next: -1}
		return i
	}
	if len(a.slots) == cap(a.slots) {
		// Grow by an eighth, not append's doubling: at a million entries
		// a doubling would reserve another 64 MB for the next few adds.
		a.grow(len(a.slots)/8 + 64)
	}
	a.slots = append(a.slots, entry{prev: -1, next: -1})
	return slot(len(a.slots) - 1)
}

// release returns an unlinked slot to the free chain.
func (a *arena) release(i slot) {
	a.slots[i] = entry{prev: -1, next: -2 - a.free}
	a.free = i
}

func (a *arena) back() slot {
	if a.len == 0 {
		return 0
	}
	return a.slots[0].prev
}

// towardFront returns the entry more recently used than i, or 0.
func (a *arena) towardFront(i slot) slot { return a.slots[i].prev }

func (a *arena) insertAfter(i, at slot) {
	x, p := &a.slots[i], &a.slots[at]
	x.prev = at
	x.next = p.next
	a.slots[p.next].prev = i
	p.next = i
	a.len++
}

func (a *arena) pushFront(i slot) { a.insertAfter(i, 0) }

func (a *arena) pushBack(i slot) { a.insertAfter(i, a.slots[0].prev) }

func (a *arena) remove(i slot) {
	x := &a.slots[i]
	a.slots[x.prev].next = x.next
	a.slots[x.next].prev = x.prev
	x.prev, x.next = -1, -1
	a.len--
}

func (a *arena) moveToFront(i slot) {
	if a.slots[0].next == i {
		return
	}
	a.remove(i)
	a.pushFront(i)
}

// insertByAge links i where its last access puts it, walking from the least
// recently used end. O(distance); used only when a blob is unpinned.
func (a *arena) insertByAge(i slot) {
	last := a.slots[i].last
	at := a.slots[0].prev
	for at != 0 && a.slots[at].last < last {
		at = a.slots[at].prev
	}
	a.insertAfter(i, at)
}
