package eviction

// entry is one blob. It is its own list node (an intrusive list), so the hit
// path neither allocates nor chases an extra pointer.
type entry struct {
	key  string
	size int64
	last int64 // last access, Unix nanoseconds

	prev, next *entry // nil when not in the list

	pinned bool
	// deleting: chosen by a pass, Delete in flight; not counted in usage.
	deleting bool
	// parked: Delete failed in the current pass; counted in usage but kept
	// out of the list until the pass ends, so the pass does not retry it.
	parked bool
}

func (x *entry) linked() bool { return x.next != nil }

// lruList is a circular doubly linked list with a sentinel: root.next is the
// most recently used entry, root.prev the least recently used.
type lruList struct {
	root entry
	len  int
}

func (l *lruList) init() {
	l.root.next = &l.root
	l.root.prev = &l.root
}

func (l *lruList) back() *entry {
	if l.len == 0 {
		return nil
	}
	return l.root.prev
}

// towardFront returns the entry more recently used than x, or nil.
func (l *lruList) towardFront(x *entry) *entry {
	if x.prev == &l.root {
		return nil
	}
	return x.prev
}

func (l *lruList) insertAfter(x, at *entry) {
	x.prev = at
	x.next = at.next
	at.next.prev = x
	at.next = x
	l.len++
}

func (l *lruList) pushFront(x *entry) { l.insertAfter(x, &l.root) }

func (l *lruList) pushBack(x *entry) { l.insertAfter(x, l.root.prev) }

func (l *lruList) remove(x *entry) {
	x.prev.next = x.next
	x.next.prev = x.prev
	x.prev, x.next = nil, nil
	l.len--
}

func (l *lruList) moveToFront(x *entry) {
	if l.root.next == x {
		return
	}
	x.prev.next = x.next
	x.next.prev = x.prev
	x.prev = &l.root
	x.next = l.root.next
	l.root.next.prev = x
	l.root.next = x
}

// insertByAge links x where its last access puts it, walking from the least
// recently used end. O(distance); used only when a blob is unpinned.
func (l *lruList) insertByAge(x *entry) {
	at := l.root.prev
	for at != &l.root && at.last < x.last {
		at = at.prev
	}
	l.insertAfter(x, at)
}
