package eviction

import (
	"encoding/hex"
	"hash/maphash"
)

// digestPrefix starts every key the cache hands in.
const digestPrefix = "sha256:"

// parseDigestKey decodes a key of the form "sha256:" + 64 lowercase hex
// characters into its 32 bytes, without allocating. Any other key is raw.
func parseDigestKey(key string) (k [32]byte, ok bool) {
	if len(key) != len(digestPrefix)+64 || key[:len(digestPrefix)] != digestPrefix {
		return k, false
	}
	h := key[len(digestPrefix):]
	for i := range k {
		hi, ok1 := unhex(h[2*i])
		lo, ok2 := unhex(h[2*i+1])
		if !ok1 || !ok2 {
			return k, false
		}
		k[i] = hi<<4 | lo
	}
	return k, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// keyIndex finds an entry's slot by its key. Digest keys (all the cache's)
// live in an open-addressing table of slots, 4 bytes a cell at most 3/4
// full, whose cells hold no key: the key is the entry's 32 bytes, so it is
// stored once. Raw keys (any other text) are rare and kept in ordinary maps.
type keyIndex struct {
	seed  maphash.Seed
	cells []slot // 0 = empty; len is a power of two
	n     int    // digest keys indexed

	raw     map[string]slot
	rawKeys map[slot]string
}

func (t *keyIndex) init() {
	t.seed = maphash.MakeSeed()
	t.cells = make([]slot, 16)
	t.raw = make(map[string]slot)
	t.rawKeys = make(map[slot]string)
}

// home is k's preferred cell. The seeded hash keeps digests chosen to
// collide in the low bits from piling up in one run of cells.
func (t *keyIndex) home(k *[32]byte) int {
	return int(maphash.Bytes(t.seed, k[:]) & uint64(len(t.cells)-1))
}

// lookup returns key's slot, or 0.
func (t *keyIndex) lookup(a *arena, key string) slot {
	k, ok := parseDigestKey(key)
	if !ok {
		return t.raw[key]
	}
	mask := len(t.cells) - 1
	for c := t.home(&k); ; c = (c + 1) & mask {
		i := t.cells[c]
		if i == 0 {
			return 0
		}
		if a.slots[i].key == k {
			return i
		}
	}
}

// insert indexes slot i under key, which must not be indexed, and sets the
// entry's key bytes (or its raw flag).
func (t *keyIndex) insert(a *arena, key string, i slot) {
	k, ok := parseDigestKey(key)
	if !ok {
		a.slots[i].set(flagRaw, true)
		t.raw[key] = i
		t.rawKeys[i] = key
		return
	}
	a.slots[i].key = k
	if (t.n+1)*4 > len(t.cells)*3 {
		t.resize(a, len(t.cells)*2)
	}
	t.place(a, i)
	t.n++
}

// reserve sizes the table for n more digest keys (Load's bulk).
func (t *keyIndex) reserve(a *arena, n int) {
	size := len(t.cells)
	for (t.n+n)*4 > size*3 {
		size *= 2
	}
	if size != len(t.cells) {
		t.resize(a, size)
	}
}

func (t *keyIndex) place(a *arena, i slot) {
	mask := len(t.cells) - 1
	c := t.home(&a.slots[i].key)
	for t.cells[c] != 0 {
		c = (c + 1) & mask
	}
	t.cells[c] = i
}

func (t *keyIndex) resize(a *arena, size int) {
	old := t.cells
	t.cells = make([]slot, size)
	for _, i := range old {
		if i != 0 {
			t.place(a, i)
		}
	}
}

// remove unindexes slot i (indexed under its key).
func (t *keyIndex) remove(a *arena, i slot) {
	x := &a.slots[i]
	if x.is(flagRaw) {
		delete(t.raw, t.rawKeys[i])
		delete(t.rawKeys, i)
		x.set(flagRaw, false)
		return
	}
	mask := len(t.cells) - 1
	c := t.home(&x.key)
	for t.cells[c] != i {
		c = (c + 1) & mask
	}
	// Backward-shift deletion: pull later cells of the run into the gap
	// when their home allows it, so lookups never need tombstones.
	for {
		t.cells[c] = 0
		next := c
		for {
			next = (next + 1) & mask
			j := t.cells[next]
			if j == 0 {
				t.n--
				return
			}
			h := t.home(&a.slots[j].key)
			// j may move to c if its home is not in (c, next].
			if (next > c && (h <= c || h > next)) || (next < c && h <= c && h > next) {
				t.cells[c] = j
				c = next
				break
			}
		}
	}
}

// key returns the text of slot i's key.
func (t *keyIndex) key(a *arena, i slot) string {
	x := &a.slots[i]
	if x.is(flagRaw) {
		return t.rawKeys[i]
	}
	var b [len(digestPrefix) + 64]byte
	copy(b[:], digestPrefix)
	hex.Encode(b[len(digestPrefix):], x.key[:])
	return string(b[:])
}
