package cache

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// The data dir holds private repository and tag names (in the index) and
// private content (in blobs/), so it and everything in it belong to the
// user that runs regmirror alone: directories 0700, files 0600 (blobs and
// temp files are made by os.CreateTemp, which uses 0600).
const dirMode fs.FileMode = 0o700

// makePrivate makes dir (created if missing) and everything under it
// private: a directory or file any other user may read, write or enter
// loses those bits, and the change is logged once. It also restricts the
// process umask (see restrictUmask), so that files created later, Badger's
// included, are private from the start. The walk (a stat per file, 2 s for
// 100k blobs) runs only when dir itself is open to others: inside a
// private dir nobody else reaches anything, and what this process creates
// there is private already. dir may be a symlink; the walk follows it but
// no link below it.
func makePrivate(dir string, log *slog.Logger) error {
	restrictUmask()
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 == 0 {
		return nil
	}
	var tightened int
	tighten := func(path string, mode fs.FileMode) {
		if mode&0o077 == 0 {
			return
		}
		if err := os.Chmod(path, mode.Perm()&^0o077); err != nil {
			log.Warn("cannot make a data dir entry private", "path", path, "err", err)
			return
		}
		tightened++
	}
	// The trailing separator makes the walk start from what a symlinked
	// data dir points to.
	err = filepath.WalkDir(dir+string(os.PathSeparator), func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		if e.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		tighten(path, fi.Mode())
		return nil
	})
	if tightened > 0 {
		log.Warn("the data dir was readable by other users; made it private (directories 0700, files 0600)",
			"dir", dir, "entries_changed", tightened)
	}
	return err
}
