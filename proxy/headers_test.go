package proxy

import (
	"fmt"
	"net"
	"sync"
	"testing"
)

// A slot holds whichever value hashed there last: values that share it
// take turns, and each lookup still returns its own bytes' value.
func TestInternedSharedSlot(t *testing.T) {
	tb := newInterned(1, 64)
	for i := range 10 {
		for _, v := range []string{"/v2/a/manifests/x", "/v2/b/manifests/y"} {
			if got := tb.get([]byte(v)); got != v {
				t.Fatalf("round %d: get(%q) = %q", i, v, got)
			}
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			v := fmt.Sprintf("/v2/repo%d/blobs/sha256:0", g)
			for range 1000 {
				if got := tb.get([]byte(v)); got != v {
					t.Errorf("get(%q) = %q", v, got)
					return
				}
			}
		})
	}
	wg.Wait()
}

// Client addresses are kept by the IP's bytes and answered as text: mk
// runs once per address, not per request.
func TestInternedKeyIsNotTheValue(t *testing.T) {
	v4, v6 := net.IPv4(127, 0, 0, 1), net.ParseIP("::1")
	tb := newInterned(internSlots, net.IPv6len)
	for tb.slot(v4) == tb.slot(v6) { // two values in one slot take turns
		tb = newInterned(internSlots, net.IPv6len)
	}
	made := 0
	for range 3 {
		for _, ip := range []net.IP{v4, v6} {
			got := tb.getOr(ip, func() string { made++; return ip.String() })
			if got != ip.String() {
				t.Fatalf("getOr(%v) = %q", ip, got)
			}
		}
	}
	if made != 2 {
		t.Errorf("mk ran %d times for 2 addresses, want 2", made)
	}
}

// Values longer than the table's limit are made every time and never
// kept, so a client sending huge paths cannot grow the tables.
func TestInternedKeepsNoLongValue(t *testing.T) {
	tb := newInterned(4, 8)
	long := []byte("/v2/a-long-repository/manifests/latest")
	if got := tb.get(long); got != string(long) {
		t.Fatalf("get = %q", got)
	}
	for i := range tb.slots {
		if e := tb.slots[i].Load(); e != nil {
			t.Fatalf("slot %d holds %q", i, e.key)
		}
	}
}

// A repeated value costs no allocation: this is what lets a warm request
// allocate nothing (BenchmarkSmallHits).
func TestInternedHitAllocatesNothing(t *testing.T) {
	paths, addrs := newInterned(internSlots, 512), newInterned(internSlots, net.IPv6len)
	path := []byte("/v2/library/small/manifests/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	ip := net.IPv4(10, 0, 0, 7)
	if n := testing.AllocsPerRun(100, func() { // the first, uncounted run fills the tables
		paths.get(path)
		addrs.getOr(ip, ip.String)
	}); n != 0 {
		t.Errorf("a hit allocates %.0f times", n)
	}
}

// A table's size is a power of two: the slot is the hash's low bits.
func TestInternedSizeIsAPowerOfTwo(t *testing.T) {
	for _, n := range []int{0, 3, 4095} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("a table of %d slots was made", n)
				}
			}()
			newInterned(n, 8)
		}()
	}
}
