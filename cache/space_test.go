package cache

import (
	"errors"
	"syscall"
	"testing"
)

// TestSpaceGuardBudget: free space is measured once per spaceCheckEvery
// bytes written, not per write; a refusal leaves nothing written and the
// next call measures again, so space freed meanwhile is seen at once.
func TestSpaceGuardBudget(t *testing.T) {
	const reserve = 100 << 20
	free := int64(reserve + 10<<20)
	calls := 0
	g := &spaceGuard{reserve: reserve, free: func() (int64, error) { calls++; return free, nil }}

	const chunk = 32 << 10
	for range spaceCheckEvery / chunk {
		if err := g.take(chunk); err != nil {
			t.Fatal(err)
		}
		free -= chunk
	}
	if calls != 1 {
		t.Fatalf("%d statfs calls for %d bytes, want 1", calls, spaceCheckEvery)
	}
	written := int64(spaceCheckEvery)
	var err error
	for err == nil {
		if err = g.take(chunk); err == nil {
			free -= chunk
			written += chunk
		}
	}
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("past the reserve: %v, want ErrNoSpace", err)
	}
	if written != 10<<20 || free != reserve {
		t.Fatalf("wrote %d bytes, %d left free; want 10 MiB and the reserve", written, free)
	}
	if err := g.take(0); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("starting a blob at the reserve: %v, want ErrNoSpace", err)
	}

	free += 1 << 20 // eviction freed a MiB
	before := calls
	if err := g.take(chunk); err != nil {
		t.Fatalf("after space was freed: %v", err)
	}
	if calls != before+1 {
		t.Fatal("a write after a refusal did not measure the free space again")
	}
	var none *spaceGuard
	if err := none.take(1 << 40); err != nil {
		t.Fatalf("no guard: %v", err)
	}
}

// TestIndexReserveSmallFilesystem: the default reserve takes at most half
// of a small filesystem, so that it can still hold a cache.
func TestIndexReserveSmallFilesystem(t *testing.T) {
	for _, c := range []struct{ total, want int64 }{
		{64 << 20, 32 << 20},
		{2 * DefaultIndexReserve, DefaultIndexReserve},
		{1 << 40, DefaultIndexReserve},
	} {
		if got := indexReserve(c.total); got != c.want {
			t.Errorf("indexReserve(%d) = %d, want %d", c.total, got, c.want)
		}
	}
}
