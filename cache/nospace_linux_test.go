package cache

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestNoSpaceTmpfs fills a real (tiny) filesystem. It needs root and a
// working mount(2); elsewhere it is skipped and TestNoSpaceInjected stands
// in for it.
func TestNoSpaceTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	s := openStore(t, "")
	tmp := filepath.Join(s.Dir(), "tmp")
	if err := syscall.Mount("tmpfs", tmp, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(tmp, syscall.MNT_DETACH) })

	data, d := blob(1<<20, 40)
	w, err := s.Create(d, "x")
	if err != nil {
		t.Fatal(err)
	}
	var werr error
	for off := 0; off < len(data) && werr == nil; off += 16384 {
		_, werr = w.Write(data[off : off+16384])
	}
	if !errors.Is(werr, ErrNoSpace) || !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("writing 1 MiB into a 64 KiB filesystem: %v, want ErrNoSpace", werr)
	}
	if err := w.Cancel(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("tmp/ holds %d entries after Cancel", len(ents))
	}
}
