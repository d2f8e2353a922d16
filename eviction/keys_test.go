package eviction

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"testing"
)

func digestKey(n int) string {
	sum := sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(n)))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func TestParseDigestKey(t *testing.T) {
	k := digestKey(1)
	b, ok := parseDigestKey(k)
	if !ok || digestPrefix+hex.EncodeToString(b[:]) != k {
		t.Fatalf("parseDigestKey(%q) = %x, %v", k, b, ok)
	}
	for _, raw := range []string{"", "a", "sha256:", k[:len(k)-1], k + "0", "sha512:" + k[7:], "sha256:" + "A" + k[8:], "sha256:" + "g" + k[8:]} {
		if _, ok := parseDigestKey(raw); ok {
			t.Errorf("parseDigestKey(%q) accepted a raw key", raw)
		}
	}
}

// TestKeyIndexModel drives the open-addressing table through random
// inserts and removals (many collisions in a small table, growth, runs
// wrapping around its end) and checks every lookup against a map.
func TestKeyIndexModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var a arena
	var ix keyIndex
	a.init()
	ix.init()
	model := map[string]slot{}
	for step := range 20000 {
		key := digestKey(r.IntN(600))
		if r.IntN(10) == 0 {
			key = "raw-" + key[7:12]
		}
		if i, ok := model[key]; ok {
			if got := ix.lookup(&a, key); got != i {
				t.Fatalf("step %d: lookup(%s) = %d, want %d", step, key, got, i)
			}
			if r.IntN(2) == 0 {
				ix.remove(&a, i)
				a.release(i)
				delete(model, key)
			}
			continue
		}
		if got := ix.lookup(&a, key); got != 0 {
			t.Fatalf("step %d: absent %s found in slot %d", step, key, got)
		}
		i := a.alloc()
		ix.insert(&a, key, i)
		model[key] = i
		if ix.key(&a, i) != key {
			t.Fatalf("key(%d) = %q, want %q", i, ix.key(&a, i), key)
		}
	}
	for key, i := range model {
		if got := ix.lookup(&a, key); got != i {
			t.Fatalf("lookup(%s) = %d, want %d", key, got, i)
		}
	}
	if n := len(model) - len(ix.raw); n != ix.n {
		t.Fatalf("table counts %d digest keys, model %d", ix.n, n)
	}
}

// TestDigestKeysRandomOps runs the Evictor's operations on cache-shaped
// keys (the compact path) and raw ones together; the invariant check at
// cleanup proves counters, list, index and slots agree.
func TestDigestKeysRandomOps(t *testing.T) {
	d := &fakeDeleter{fail: map[string]error{digestKey(7): errors.New("disk says no")}}
	e, _ := newTest(t, Options{MaxBytes: 2000}, d)
	r := rand.New(rand.NewPCG(3, 4))
	key := func() string {
		if r.IntN(8) == 0 {
			return "raw" + digestKey(r.IntN(20))[7:9]
		}
		return digestKey(r.IntN(300))
	}
	for step := range 5000 {
		switch r.IntN(7) {
		case 0, 1:
			e.Add(Entry{Key: key(), Size: int64(r.IntN(40)), LastAccess: at(step)})
		case 2:
			e.Touch(key(), at(step))
		case 3:
			e.Remove(key())
		case 4:
			e.SetPinned(key(), r.IntN(3) == 0)
		case 5:
			e.Hold(key())()
		case 6:
			if _, err := e.EvictNow(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if s := e.Stats(); s.Bytes > e.maxBytes*2 {
		t.Fatalf("usage %d", s.Bytes)
	}
	checkInvariants(t, e)
}

// TestKeyIndexRemoveWrapsAround: removing the first key of a run that
// wraps past the table's end pulls the keys after it (in cells 0, 1, ...)
// back into place, so they are still found. The keys are chosen for this
// table's seed, so the wrap happens on every run, not by chance.
func TestKeyIndexRemoveWrapsAround(t *testing.T) {
	var a arena
	var ix keyIndex
	a.init()
	ix.init()
	last := len(ix.cells) - 1
	var keys []string
	for n := 0; len(keys) < 3; n++ {
		key := digestKey(n)
		k, _ := parseDigestKey(key)
		if ix.home(&k) == last {
			keys = append(keys, key)
		}
	}
	slots := map[string]slot{}
	for _, key := range keys {
		i := a.alloc()
		ix.insert(&a, key, i)
		slots[key] = i
	}
	if len(ix.cells) != last+1 {
		t.Fatalf("the table grew to %d cells; the test needs it at %d", len(ix.cells), last+1)
	}
	if ix.cells[last] != slots[keys[0]] || ix.cells[0] != slots[keys[1]] || ix.cells[1] != slots[keys[2]] {
		t.Fatalf("cells %v: the run does not wrap as the test needs", ix.cells)
	}
	ix.remove(&a, slots[keys[0]])
	a.release(slots[keys[0]])
	for _, key := range keys[1:] {
		if got := ix.lookup(&a, key); got != slots[key] {
			t.Errorf("after removing the run's first key, lookup(%s) = %d, want %d", key, got, slots[key])
		}
	}
}
