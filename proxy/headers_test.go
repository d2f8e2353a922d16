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
	tb := newInterned(internSlots, net.IPv6len)
	made := 0
	for range 3 {
		for _, ip := range []net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP("::1")} {
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
	tb := newInterned(internSlots, 512)
	path := []byte("/v2/library/small/manifests/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	tb.get(path)
	ip := net.IPv4(10, 0, 0, 7)
	tb.getOr(ip, ip.String)
	if n := testing.AllocsPerRun(100, func() {
		tb.get(path)
		tb.getOr(ip, ip.String)
	}); n != 0 {
		t.Errorf("a hit allocates %.0f times", n)
	}
}
