package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
)

// junkPath is a name reconcile removes ("not a fan-out directory"), used to
// tell which path an Open took: the fast path leaves it alone.
func junkPath(dir string) string { return filepath.Join(dir, "blobs", "sha256", "junk") }

func exists(path string) bool { _, err := os.Lstat(path); return err == nil }

// reopenLogs opens dir with a captured log and returns the store and which
// startup ran: "skipped" (clean-shutdown fast path) or "reconciled".
func reopenLogs(t *testing.T, dir string) (*Store, string) {
	t.Helper()
	logs := &syncBuffer{}
	s := openStore(t, dir, func(o *Options) { o.Logger = testLogger(logs) })
	switch l := logs.String(); {
	case strings.Contains(l, "reconcile skipped") && !strings.Contains(l, "cache reconciled"):
		return s, "skipped"
	case strings.Contains(l, "cache reconciled") && !strings.Contains(l, "reconcile skipped"):
		return s, "reconciled"
	default:
		t.Fatalf("startup logs name neither path:\n%s", l)
		return nil, ""
	}
}

// TestCleanShutdownSkipsReconcile: after Close the next Open trusts the
// marker (no walk of files or records), keeps the usage totals, still clears
// tmp/, and removes the marker before it returns, so a crash while open
// leaves none.
func TestCleanShutdownSkipsReconcile(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	data, d := blob(3000, 40)
	mustPut(t, s, data, d, "x")
	data2, d2 := blob(700, 41)
	mustPut(t, s, data2, d2, "x")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !exists(filepath.Join(dir, cleanMarkerName)) {
		t.Fatal("Close wrote no clean-shutdown marker")
	}
	os.WriteFile(junkPath(dir), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "tmp", "sha256-abc-1"), []byte("partial"), 0o600)

	s2, path := reopenLogs(t, dir)
	if path != "skipped" {
		t.Fatalf("Open after a clean Close: %s, want the fast path", path)
	}
	if exists(filepath.Join(dir, cleanMarkerName)) {
		t.Fatal("the marker is still there while the store is open: a crash now would be trusted")
	}
	if !exists(junkPath(dir)) {
		t.Fatal("the fast path walked blobs/")
	}
	if got := files(t, filepath.Join(dir, "tmp")); len(got) != 0 {
		t.Fatalf("tmp/ holds %v", got)
	}
	if b, n := s2.Usage(); b != 3700 || n != 2 {
		t.Fatalf("Usage = %d, %d; want 3700, 2", b, n)
	}
	if got, _, err := s2.ReadAll(d, 1<<20); err != nil || string(got) != string(data) {
		t.Fatalf("ReadAll: %v", err)
	}
	if err := s2.Delete(d2); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	// The totals kept through the fast path are written again.
	s3, path := reopenLogs(t, dir)
	if b, n := s3.Usage(); path != "skipped" || b != 3000 || n != 1 {
		t.Fatalf("second clean reopen: %s, Usage = %d, %d", path, b, n)
	}
}

// TestCleanMarkerNotTrusted: a marker that is not this dir's, not this
// version's, or unreadable is removed and ignored: Open reconciles fully.
func TestCleanMarkerNotTrusted(t *testing.T) {
	for _, tc := range []struct {
		name string
		// mangle returns the dir to open next.
		mangle func(t *testing.T, dir string) string
	}{
		{"data dir copied elsewhere", func(t *testing.T, dir string) string {
			cp := filepath.Join(t.TempDir(), "copy")
			if err := os.CopyFS(cp, os.DirFS(dir)); err != nil {
				t.Fatal(err)
			}
			os.Chmod(cp, 0o700)
			return cp
		}},
		{"data dir replaced at the same path", func(t *testing.T, dir string) string {
			old := dir + ".old"
			if err := os.Rename(dir, old); err != nil {
				t.Fatal(err)
			}
			if err := os.CopyFS(dir, os.DirFS(old)); err != nil {
				t.Fatal(err)
			}
			os.Chmod(dir, 0o700)
			return dir
		}},
		{"other version", func(t *testing.T, dir string) string {
			rewriteMarker(t, dir, func(m string) string {
				return strings.Replace(m, cleanMarkerVersion, "regmirror-clean-shutdown 0", 1)
			})
			return dir
		}},
		{"other dir recorded", func(t *testing.T, dir string) string {
			rewriteMarker(t, dir, func(m string) string { return strings.Replace(m, "dir "+dir, "dir /elsewhere", 1) })
			return dir
		}},
		{"garbage", func(t *testing.T, dir string) string {
			rewriteMarker(t, dir, func(string) string { return "clean\n" })
			return dir
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			s := openStore(t, dir)
			data, d := blob(1000, 50)
			mustPut(t, s, data, d, "x")
			s.Close()
			os.WriteFile(junkPath(dir), []byte("x"), 0o600)
			dir = tc.mangle(t, dir)
			s2, path := reopenLogs(t, dir)
			if path != "reconciled" {
				t.Fatalf("Open: %s, want a full reconcile", path)
			}
			if exists(junkPath(dir)) || exists(filepath.Join(dir, cleanMarkerName)) {
				t.Fatal("junk or marker left after a full reconcile")
			}
			if b, n := s2.Usage(); b != 1000 || n != 1 {
				t.Fatalf("Usage = %d, %d", b, n)
			}
		})
	}
}

func rewriteMarker(t *testing.T, dir string, f func(string) string) {
	t.Helper()
	path := filepath.Join(dir, cleanMarkerName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(f(string(b))), fs.FileMode(0o600)); err != nil {
		t.Fatal(err)
	}
}

// TestFailedCloseWritesNoMarker: a Close whose last access flush fails
// (the index already closed under it) leaves no clean-shutdown marker, so
// the next Open reconciles instead of trusting an index that missed writes.
func TestFailedCloseWritesNoMarker(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	data, d := blob(1000, 42)
	mustPut(t, s, data, d, "x")
	s.Touch(d) // an access for the final flush to write
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err == nil {
		t.Fatal("Close reported no error though its flush could not be written")
	}
	if exists(filepath.Join(dir, cleanMarkerName)) {
		t.Fatal("a Close that failed wrote the clean-shutdown marker")
	}
	if _, path := reopenLogs(t, dir); path != "reconciled" {
		t.Fatalf("Open after a failed Close: %s, want a full reconcile", path)
	}
}

// TestLeftFileMeansReconcile: a run that leaves a blob file without a
// record (its removal failed: here the fan-out directory is immutable)
// writes no clean-shutdown marker, so the next Open reconciles and the file
// is counted again (Delete: still the verified content) or removed (a stale
// record's file of the wrong size), instead of lying in blobs/ unseen.
func TestLeftFileMeansReconcile(t *testing.T) {
	for _, c := range []struct {
		name    string
		damage  func(t *testing.T, path string) // before the removal
		remove  func(s *Store, d digest.Digest) error
		indexed bool // after the next Open
	}{
		{"delete", nil, func(s *Store, d digest.Digest) error { return s.Delete(d) }, true},
		{"stale record", func(t *testing.T, path string) {
			if err := os.Truncate(path, 100); err != nil {
				t.Fatal(err)
			}
		}, func(s *Store, d digest.Digest) error {
			if _, _, err := s.Open(d); !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("Open of a blob of the wrong size: %v, want ErrNotFound", err)
			}
			return nil
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			data, d := blob(1000, 78)
			mustPut(t, s, data, d, "x")
			path := blobFile(s, d)
			if c.damage != nil {
				c.damage(t, path)
			}
			fan := filepath.Dir(path)
			if out, err := exec.Command("chattr", "+i", fan).CombinedOutput(); err != nil {
				t.Skipf("chattr +i: %v %s", err, out)
			}
			t.Cleanup(func() { exec.Command("chattr", "-i", fan).Run() })
			err := c.remove(s, d)
			exec.Command("chattr", "-i", fan).Run()
			if err != nil {
				t.Fatal(err)
			}
			if !exists(path) {
				t.Fatal("the file was removed from an immutable directory")
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, path2 := reopenLogs(t, dir)
			if path2 != "reconciled" {
				t.Fatalf("Open after a run that left a file without a record: %s, want a full reconcile", path2)
			}
			bytes, blobs := s2.Usage()
			_, serr := s2.Stat(d)
			switch {
			case c.indexed && (serr != nil || bytes != 1000 || blobs != 1):
				t.Fatalf("left file not re-indexed: Stat %v, usage %d bytes / %d blobs", serr, bytes, blobs)
			case !c.indexed && (serr == nil || bytes != 0 || blobs != 0 || exists(path)):
				t.Fatalf("damaged left file kept: Stat %v, usage %d bytes / %d blobs, on disk %v", serr, bytes, blobs, exists(path))
			}
		})
	}
}
