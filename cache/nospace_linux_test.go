package cache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
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

// TestIndexReserveFullDisk fills a real filesystem with a blob and then
// writes to the index. Badger writes through mmapped sparse files, so
// without the reserve the first index write on a full filesystem is a
// SIGBUS that kills the process; the work runs in a child process so that
// this test fails cleanly instead, and the mount is the parent's to remove.
func TestIndexReserveFullDisk(t *testing.T) {
	if dir := os.Getenv("REGMIRROR_FULL_DISK_DIR"); dir != "" {
		fullDiskChild(t, dir)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	// The blob gets 32 MiB; everything else is the index's reserve.
	size := DefaultIndexReserve + 32<<20
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	cmd := exec.Command(os.Args[0], "-test.run=^TestIndexReserveFullDisk$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "REGMIRROR_FULL_DISK_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestIndexReserveFullDisk")) {
		t.Fatalf("child: %v\n%s", err, out[:min(len(out), 3000)])
	}
}

func fullDiskChild(t *testing.T, dir string) {
	// The default amount, given explicitly: on a filesystem this small the
	// default would be capped at half of it.
	s, err := Open(Options{Dir: dir, Logger: testLogger(io.Discard), AccessFlushInterval: time.Hour, IndexReserve: DefaultIndexReserve})
	if err != nil {
		t.Fatal(err)
	}
	var small []digest.Digest
	for i := range 20 {
		data, d := blob(100, uint64(1000+i))
		mustPut(t, s, data, d, "x")
		small = append(small, d)
	}

	data, d := blob(1<<20, 40)
	w, err := s.Create(d, "x")
	if err != nil {
		t.Fatal(err)
	}
	// Halving the chunk down to one byte leaves nothing above the reserve.
	for n := len(data); n > 0; n /= 2 {
		for err = nil; err == nil; {
			_, err = w.Write(data[:n])
		}
		if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("filling the disk: %v, want ErrNoSpace", err)
		}
	}
	if free, _, _ := fsSpace(dir); free < DefaultIndexReserve-(1<<20) {
		t.Errorf("blob writes stopped with %d bytes free, want about the reserve %d", free, DefaultIndexReserve)
	}
	if w2, err := s.Create(d, "x"); !errors.Is(err, ErrNoSpace) {
		t.Errorf("Create on a disk down to the reserve: %v, want ErrNoSpace", err)
		if err == nil {
			w2.Cancel()
		}
	}

	// More than a memtable of index writes: Badger rotates its WAL and
	// flushes a table into the reserve.
	body := bytes.Repeat([]byte("t"), 512<<10)
	for i := range memTableSize/len(body) + 2 {
		if err := s.SetTagList("docker.io", fmt.Sprintf("repo-%d", i), body); err != nil {
			t.Fatalf("SetTagList %d: %v", i, err)
		}
	}
	for i := range 100 {
		if err := s.SetTag("docker.io", "library/alpine", fmt.Sprintf("tag-%d", i), TagRecord{Digest: d, MediaType: "x"}); err != nil {
			t.Fatalf("SetTag %d: %v", i, err)
		}
	}
	later := time.Now().Add(time.Hour)
	s.now = func() time.Time { return later }
	for _, sd := range small {
		s.Touch(sd)
	}
	if err := s.flushAccess(); err != nil {
		t.Fatalf("access flush: %v", err)
	}
	if info, err := s.Stat(small[0]); err != nil || !info.LastAccess.Equal(later) {
		t.Fatalf("after the flush: %+v, %v", info, err)
	}
	w.Cancel()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
