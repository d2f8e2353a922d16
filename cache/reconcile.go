package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	digest "github.com/opencontainers/go-digest"
)

type fileEntry struct {
	size  int64
	mtime time.Time
}

// reconciliation is one reconcile's findings and counts.
type reconciliation struct {
	files     map[string]fileEntry // blob files by hex digest; those with a record are taken out
	drop      [][]byte             // keys of records to drop
	kept      int                  // blobs indexed at the end
	bytes     int64
	dropped   int
	reindexed int
	removed   int // unexpected files removed
}

// reconcile brings files and index into agreement after an unclean (or
// clean) shutdown and loads the usage totals. See the package doc for the
// argument. It runs before the Store is shared, so it takes no locks.
func (s *Store) reconcile() error {
	start := time.Now()
	// Downloads in progress did not survive.
	temps, err := s.cleanTemp()
	if err != nil {
		return err
	}
	r := &reconciliation{files: make(map[string]fileEntry)}
	if err := s.scanBlobFiles(r); err != nil {
		return err
	}
	if err := s.checkRecords(r); err != nil {
		return err
	}
	if err := s.repairIndex(r); err != nil {
		return err
	}
	s.usedBytes.Store(r.bytes)
	s.usedBlobs.Store(int64(r.kept))
	s.log.Info("cache reconciled", "dir", s.dir, "blobs", r.kept, "bytes", r.bytes,
		"dropped_records", r.dropped, "reindexed", r.reindexed, "removed_files", r.removed,
		"removed_temp", temps, "took_s", time.Since(start).Round(time.Millisecond).Seconds())
	return nil
}

// removeUnexpected removes a file or directory that has no place under
// blobs/.
func (s *Store) removeUnexpected(r *reconciliation, path, why string) error {
	s.log.Warn("removing unexpected file from blob store", "path", path, "reason", why)
	r.removed++
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	return nil
}

// scanBlobFiles lists what is on disk, by hex digest. Anything not named
// like a blob in its fan-out directory goes.
func (s *Store) scanBlobFiles(r *reconciliation) error {
	fanouts, err := os.ReadDir(s.blobDir)
	if err != nil {
		return fmt.Errorf("cache: read %s: %w", s.blobDir, err)
	}
	for _, fo := range fanouts {
		sub := filepath.Join(s.blobDir, fo.Name())
		if !fo.IsDir() || !isFanout(fo.Name()) {
			if err := s.removeUnexpected(r, sub, "not a fan-out directory"); err != nil {
				return err
			}
			continue
		}
		blobs, err := os.ReadDir(sub)
		if err != nil {
			return fmt.Errorf("cache: read %s: %w", sub, err)
		}
		for _, b := range blobs {
			path := filepath.Join(sub, b.Name())
			name := b.Name()
			if !isHex64(name) || name[:2] != fo.Name() || !b.Type().IsRegular() {
				if err := s.removeUnexpected(r, path, "name is not a sha256 digest in its fan-out directory, or not a regular file"); err != nil {
					return err
				}
				continue
			}
			fi, err := b.Info()
			if err != nil {
				return fmt.Errorf("cache: stat %s: %w", path, err)
			}
			r.files[name] = fileEntry{size: fi.Size(), mtime: fi.ModTime()}
		}
	}
	return nil
}

// checkRecords reads every blob record: one whose file is there, of its
// size, is kept (and its file taken out of r.files); any other is to be
// dropped.
func (s *Store) checkRecords(r *reconciliation) error {
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: blobPrefix(), PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			d := digest.Digest(item.Key()[2:])
			hx, derr := validateDigest(d)
			var rec blobRecord
			verr := item.Value(func(v []byte) (err error) {
				rec, err = decodeBlob(v)
				return err
			})
			why := ""
			switch f, ok := r.files[hx]; {
			case derr != nil:
				why = "invalid digest in key"
			case verr != nil:
				why = "corrupt record"
			case !ok:
				why = "file missing"
			case f.size != rec.size:
				why = fmt.Sprintf("file size %d, record says %d", f.size, rec.size)
			}
			if why != "" {
				s.log.Warn("dropping blob record", "key", string(d), "reason", why)
				r.drop = append(r.drop, item.KeyCopy(nil))
				continue
			}
			delete(r.files, hx)
			r.kept++
			r.bytes += rec.size
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cache: reconcile index: %w", err)
	}
	return nil
}

// repairIndex drops the records checkRecords condemned and indexes again
// the files left without a record, in one write batch. Such a file is
// left by a crash between rename and index write (or between a Delete's
// two steps); only verified content is kept. Its media type was lost with
// the record; a manifest is recognised by its content (sniffMediaType),
// since clients refuse one served as application/octet-stream.
func (s *Store) repairIndex(r *reconciliation) error {
	var buf []byte // for the small files, read whole
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range r.drop {
		if err := wb.Delete(k); err != nil {
			return fmt.Errorf("cache: reconcile index: %w", classify(err))
		}
		r.dropped++
	}
	for name, f := range r.files {
		path := filepath.Join(s.blobDir, name[:2], name)
		ok, mediaType, err := checkOrphan(path, name, f.size, &buf)
		if err != nil {
			return fmt.Errorf("cache: verify %s: %w", path, err)
		}
		if !ok {
			if err := s.removeUnexpected(r, path, "content does not match its name"); err != nil {
				return err
			}
			continue
		}
		rec := blobRecord{size: f.size, mediaType: mediaType, created: f.mtime, lastAccess: f.mtime}
		if err := wb.Set(blobKey(digest.NewDigestFromEncoded(digest.SHA256, name)), rec.encode()); err != nil {
			return fmt.Errorf("cache: reconcile index: %w", classify(err))
		}
		s.log.Info("re-indexed blob found without a record", "digest", "sha256:"+name, "size", f.size, "media_type", mediaType)
		r.reindexed++
		r.kept++
		r.bytes += f.size
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("cache: reconcile index: %w", classify(err))
	}
	return nil
}

// trustClean is reconcile's fast path after a clean shutdown (see
// clean.go): the marker vouches that index and files agreed at Close, so
// only tmp/ is cleaned and the usage totals are taken from the marker. O(1)
// in the number of blobs.
func (s *Store) trustClean(c cleanState) error {
	start := time.Now()
	temps, err := s.cleanTemp()
	if err != nil {
		return err
	}
	s.usedBytes.Store(c.bytes)
	s.usedBlobs.Store(c.blobs)
	s.log.Info("cache opened after a clean shutdown, reconcile skipped", "dir", s.dir, "blobs", c.blobs, "bytes", c.bytes,
		"removed_temp", temps, "took_s", time.Since(start).Round(time.Millisecond).Seconds())
	return nil
}

func isFanout(name string) bool {
	return len(name) == 2 && isLowerHex(name[0]) && isLowerHex(name[1])
}

// checkOrphan reports whether the file at path, of size bytes, hashes to
// want, and the media type to record for it. A file of at most maxSniffSize
// bytes (every manifest) is read whole into *buf, hashed and sniffed; a
// larger one is hashed as a stream and is no manifest.
func checkOrphan(path, want string, size int64, buf *[]byte) (bool, string, error) {
	if size > maxSniffSize {
		ok, err := fileHasDigest(path, want)
		return ok, defaultMediaType, err
	}
	f, err := os.Open(path)
	if err != nil {
		return false, "", err
	}
	defer f.Close()
	if *buf == nil {
		*buf = make([]byte, maxSniffSize+1)
	}
	n, err := io.ReadFull(f, *buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return false, "", err
	}
	b := (*buf)[:n]
	sum := sha256.Sum256(b)
	if int64(n) != size || hex.EncodeToString(sum[:]) != want {
		return false, "", nil
	}
	return true, sniffMediaType(b), nil
}

func fileHasDigest(path, want string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, err
	}
	return hex.EncodeToString(h.Sum(nil)) == want, nil
}
