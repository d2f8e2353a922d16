package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cleanMarkerName is the clean-shutdown marker in the data dir. Close writes
// it as its very last step, after the final access flush and after Badger is
// closed, only when both succeeded; Open reads it and removes it (durably)
// before the index is opened. So the marker exists only while no Store has
// the dir open and nothing changed since a Close that left index and files
// in agreement: a crash, at any moment, leaves no marker, and the next
// Open reconciles fully.
const cleanMarkerName = "clean-shutdown"

// cleanMarkerVersion names the marker's format and the layout it vouches
// for; a marker of another version is not trusted.
const cleanMarkerVersion = "regmirror-clean-shutdown 1"

// cleanState is what the marker records.
type cleanState struct {
	dir   string // absolute data dir the marker was written for
	ino   uint64 // inode of that dir: a copy or a restore elsewhere is not trusted
	blobs int64  // usage totals at Close
	bytes int64
}

func (c cleanState) encode() []byte {
	return fmt.Appendf(nil, "%s\ndir %s\ninode %d\nblobs %d\nbytes %d\n", cleanMarkerVersion, c.dir, c.ino, c.blobs, c.bytes)
}

func decodeClean(b []byte) (cleanState, error) {
	var c cleanState
	lines := strings.Split(string(b), "\n")
	if len(lines) != 6 || lines[0] != cleanMarkerVersion || lines[5] != "" {
		return c, errCorrupt
	}
	field := func(i int, name string) (string, bool) {
		return strings.CutPrefix(lines[i], name+" ")
	}
	var ok [4]bool
	var ino, blobs, bytes string
	c.dir, ok[0] = field(1, "dir")
	ino, ok[1] = field(2, "inode")
	blobs, ok[2] = field(3, "blobs")
	bytes, ok[3] = field(4, "bytes")
	if ok != [4]bool{true, true, true, true} {
		return c, errCorrupt
	}
	var err1, err2, err3 error
	c.ino, err1 = strconv.ParseUint(ino, 10, 64)
	c.blobs, err2 = strconv.ParseInt(blobs, 10, 64)
	c.bytes, err3 = strconv.ParseInt(bytes, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || c.blobs < 0 || c.bytes < 0 {
		return c, errCorrupt
	}
	return c, nil
}

// dirIdentity returns the absolute path and inode of dir.
func dirIdentity(dir string) (string, uint64, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", 0, err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", 0, err
	}
	return abs, inode(fi), nil
}

// takeCleanMarker reads and removes the marker. It returns the recorded
// state and whether it is to be trusted: present, well formed, of this
// version, written for this very directory. The removal is made durable
// (the dir is fsynced) before it returns, so that a crash after it can never
// bring the marker back.
func (s *Store) takeCleanMarker() (cleanState, bool, error) {
	path := filepath.Join(s.dir, cleanMarkerName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cleanState{}, false, nil
	}
	if err != nil {
		return cleanState{}, false, fmt.Errorf("cache: read %s: %w", path, classify(err))
	}
	if err := os.Remove(path); err != nil {
		return cleanState{}, false, fmt.Errorf("cache: remove %s: %w", path, classify(err))
	}
	if err := syncDir(s.dir); err != nil {
		return cleanState{}, false, fmt.Errorf("cache: sync %s: %w", s.dir, classify(err))
	}
	c, err := decodeClean(b)
	if err != nil {
		s.log.Warn("ignoring an unreadable clean-shutdown marker; reconciling fully", "path", path)
		return cleanState{}, false, nil
	}
	abs, ino, err := dirIdentity(s.dir)
	if err != nil {
		return cleanState{}, false, fmt.Errorf("cache: data dir %s: %w", s.dir, classify(err))
	}
	if c.dir != abs || c.ino != ino {
		s.log.Warn("ignoring a clean-shutdown marker written for another data dir; reconciling fully",
			"marker_dir", c.dir, "dir", abs)
		return cleanState{}, false, nil
	}
	return c, true, nil
}

// putCleanMarker records that index and files agree, with the usage totals.
// It is called by Close after Badger is closed, and only if everything
// before succeeded.
func (s *Store) putCleanMarker() error {
	abs, ino, err := dirIdentity(s.dir)
	if err != nil {
		return err
	}
	c := cleanState{dir: abs, ino: ino, blobs: s.usedBlobs.Load(), bytes: s.usedBytes.Load()}
	path := filepath.Join(s.dir, cleanMarkerName)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(c.encode())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(s.dir)
}

// cleanTemp removes the downloads in progress: all of tmp/.
func (s *Store) cleanTemp() (int, error) {
	ents, err := os.ReadDir(s.tmpDir)
	if err != nil {
		return 0, fmt.Errorf("cache: read %s: %w", s.tmpDir, err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(s.tmpDir, e.Name())); err != nil {
			return 0, fmt.Errorf("cache: clean %s: %w", s.tmpDir, err)
		}
	}
	return len(ents), nil
}
