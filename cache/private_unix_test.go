//go:build unix

package cache

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// assertPrivate fails for every entry under dir that another user could
// read, write or enter.
func assertPrivate(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v", path, fi.Mode().Perm())
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDataDirPrivate: the data dir is 0700 and every file in it 0600 —
// blobs, temp files and Badger's tables, value logs and lock file — even
// under a permissive umask, and a data dir an older version left readable
// is tightened at Open, with a log line.
func TestDataDirPrivate(t *testing.T) {
	syscall.Umask(0o022) // the usual default: Open must not rely on a strict one
	dir := filepath.Join(t.TempDir(), "data")
	// An older regmirror's data dir: world-readable everywhere.
	old := filepath.Join(dir, "blobs", "sha256", "ab")
	if err := os.MkdirAll(old, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "admin-token"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "blobs"), filepath.Join(dir, "blobs", "sha256"), old} {
		os.Chmod(p, 0o755)
	}
	os.Chmod(filepath.Join(dir, "admin-token"), 0o644)

	var logs syncBuffer
	s := openStore(t, dir, func(o *Options) { o.Logger = testLogger(&logs) })
	if !strings.Contains(logs.String(), "made it private") {
		t.Errorf("tightening not logged:\n%s", logs.String())
	}
	// Fill: a committed blob, one in progress, index writes.
	data, d := blob(5000, 20)
	mustPut(t, s, data, d, "x")
	inProgress, pd := blob(100, 21)
	w, err := s.Create(pd, "x")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(inProgress[:50])
	n := assertPrivate(t, dir)
	w.Cancel()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n < 8 {
		t.Fatalf("only %d entries under the data dir", n)
	}
	assertPrivate(t, dir) // after Badger's close-time writes
	index, _ := os.ReadDir(filepath.Join(dir, "index"))
	if len(index) < 3 {
		t.Fatalf("index/ holds %d files; the test proves nothing about Badger's", len(index))
	}
}
