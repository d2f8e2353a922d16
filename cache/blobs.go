package cache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	badger "github.com/dgraph-io/badger/v4"
	digest "github.com/opencontainers/go-digest"
)

// Blob reads, small writes, removal and the walk over every blob. Large
// writes go through Writer (writer.go).

// blobInTxn reads d's record inside txn; a missing one is
// badger.ErrKeyNotFound.
func blobInTxn(txn *badger.Txn, d digest.Digest) (blobRecord, error) {
	item, err := txn.Get(blobKey(d))
	if err != nil {
		return blobRecord{}, err
	}
	var rec blobRecord
	err = item.Value(func(v []byte) error {
		rec, err = decodeBlob(v)
		return err
	})
	return rec, err
}

// getBlob reads the stored record (without in-memory access times).
func (s *Store) getBlob(d digest.Digest) (blobRecord, error) {
	var rec blobRecord
	err := s.db.View(func(txn *badger.Txn) (err error) {
		rec, err = blobInTxn(txn, d)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return rec, fmt.Errorf("%w: blob %s", ErrNotFound, d)
	}
	if err != nil {
		return rec, fmt.Errorf("cache: read blob record %s: %w", d, err)
	}
	return rec, nil
}

// Stat returns the indexed information about d. It writes nothing.
func (s *Store) Stat(d digest.Digest) (BlobInfo, error) {
	if _, err := validateDigest(d); err != nil {
		return BlobInfo{}, err
	}
	if err := s.rlock(); err != nil {
		return BlobInfo{}, err
	}
	rec, err := s.getBlob(d)
	s.closeMu.RUnlock()
	if err != nil {
		return BlobInfo{}, err
	}
	return s.withAccess(rec.info(d)), nil
}

// Open opens the blob file read-only and records the access in memory. If
// the index lists d but the file is gone (or has another size), the record
// is dropped and the error wraps ErrNotFound.
func (s *Store) Open(d digest.Digest) (*os.File, BlobInfo, error) {
	f, info, err := s.open(d)
	if err != nil {
		return nil, BlobInfo{}, err
	}
	info.LastAccess = s.recordAccess(d) // this access is the latest
	return f, info, nil
}

// open is Open without recording the access: one index read, then the
// file, checked against the record's size.
func (s *Store) open(d digest.Digest) (*os.File, BlobInfo, error) {
	hex, err := validateDigest(d)
	if err != nil {
		return nil, BlobInfo{}, err
	}
	if err := s.rlock(); err != nil {
		return nil, BlobInfo{}, err
	}
	rec, err := s.getBlob(d)
	s.closeMu.RUnlock()
	if err != nil {
		return nil, BlobInfo{}, err
	}
	f, err := os.Open(s.blobPath(hex))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			s.dropStale(d, hex, "file missing")
			return nil, BlobInfo{}, fmt.Errorf("%w: blob %s (file missing)", ErrNotFound, d)
		}
		return nil, BlobInfo{}, fmt.Errorf("cache: open blob %s: %w", d, err)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != rec.size {
		f.Close()
		s.dropStale(d, hex, "file size differs from index")
		return nil, BlobInfo{}, fmt.Errorf("%w: blob %s (file damaged)", ErrNotFound, d)
	}
	return f, rec.info(d), nil
}

// Touch records an access to d in memory only.
func (s *Store) Touch(d digest.Digest) {
	if _, err := validateDigest(d); err != nil {
		return
	}
	s.recordAccess(d)
}

// ReadAll returns the whole content of a small blob (a manifest), after
// checking it against its digest. A blob larger than max is not read: the
// error wraps ErrTooLarge. Content that no longer matches its digest is
// removed and reported as ErrNotFound, so the caller fetches it again.
func (s *Store) ReadAll(d digest.Digest, max int64) ([]byte, BlobInfo, error) {
	f, info, err := s.open(d)
	if err != nil {
		return nil, BlobInfo{}, err
	}
	defer f.Close()
	if info.Size > max {
		return nil, s.withAccess(info), fmt.Errorf("%w: blob %s is %d bytes, limit %d", ErrTooLarge, d, info.Size, max)
	}
	data := make([]byte, info.Size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, BlobInfo{}, fmt.Errorf("cache: read blob %s: %w", d, err)
	}
	if sha256Hex(data) != d.Encoded() {
		if fi, err := f.Stat(); err == nil {
			s.dropCorrupt(d, d.Encoded(), fi)
		}
		return nil, BlobInfo{}, fmt.Errorf("%w: blob %s (corrupt content removed)", ErrNotFound, d)
	}
	if info.MediaType == defaultMediaType {
		// A manifest recorded with the generic type (fetched through
		// /blobs/, or re-indexed by an older release) is named by its
		// content, once for all: clients refuse a manifest so typed.
		if mt := sniffMediaType(data); mt != defaultMediaType {
			if err := s.SetMediaType(d, mt); err != nil {
				s.log.Warn("recording a manifest's media type", "digest", d, "err", err)
			}
			info.MediaType = mt
		}
	}
	info.LastAccess = s.recordAccess(d)
	return data, info, nil
}

// Put verifies and stores small content (a manifest). If d is already
// stored, it returns the existing information without writing the
// content; only a record that has the generic type reconcile gives a blob
// found without one (application/octet-stream) takes mediaType.
func (s *Store) Put(d digest.Digest, mediaType string, data []byte) (BlobInfo, error) {
	return s.put(d, mediaType, data, false)
}

// PutScoped is Put for content of a registry scoped per repository (see
// Writer.Scope).
func (s *Store) PutScoped(d digest.Digest, mediaType string, data []byte) (BlobInfo, error) {
	return s.put(d, mediaType, data, true)
}

func (s *Store) put(d digest.Digest, mediaType string, data []byte, scoped bool) (BlobInfo, error) {
	hex, err := validateDigest(d)
	if err != nil {
		return BlobInfo{}, err
	}
	if info, err := s.Stat(d); err == nil {
		if fi, err := os.Stat(s.blobPath(hex)); err == nil && fi.Size() == info.Size {
			if info.MediaType == defaultMediaType && mediaType != "" && mediaType != defaultMediaType {
				if err := s.SetMediaType(d, mediaType); err != nil {
					return BlobInfo{}, err
				}
				info.MediaType = mediaType
			}
			return info, nil
		}
	}
	w, err := s.Create(d, mediaType)
	if err != nil {
		return BlobInfo{}, err
	}
	if scoped {
		w.Scope()
	}
	if _, err := w.Write(data); err != nil {
		w.Cancel()
		return BlobInfo{}, err
	}
	return w.Commit(int64(len(data)))
}

// dropStale removes the record for d if its file is (still) missing or of
// the wrong size. The file, if any, is removed as well. It reports whether
// it dropped a record (not when another change got there first).
func (s *Store) dropStale(d digest.Digest, hex, why string) (dropped bool) {
	if err := s.rlock(); err != nil {
		return false
	}
	mu := s.stripe(hex)
	mu.Lock()
	rec, err := s.getBlob(d)
	if err != nil {
		mu.Unlock()
		s.closeMu.RUnlock()
		return false
	}
	path := s.blobPath(hex)
	if fi, err := os.Stat(path); err == nil && fi.Size() == rec.size {
		mu.Unlock() // repaired meanwhile by a Commit
		s.closeMu.RUnlock()
		return false
	}
	err = s.update(func(txn *badger.Txn) error { return txn.Delete(blobKey(d)) })
	if err == nil {
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			s.leftFile("removing stale blob file", "digest", d, "err", rerr)
		}
		s.usedBytes.Add(-rec.size)
		s.usedBlobs.Add(-1)
	}
	mu.Unlock()
	s.closeMu.RUnlock()
	if err != nil {
		s.log.Error("dropping stale blob record", "digest", d, "err", err)
		return false
	}
	s.forgetAccess(d)
	s.log.Warn("dropped blob record", "digest", d, "reason", why)
	s.obs.removed(d)
	return true
}

// Delete removes the index record and then the file. Readers holding the
// file open keep reading it. The error wraps ErrNotFound if d is absent.
func (s *Store) Delete(d digest.Digest) error {
	hex, err := validateDigest(d)
	if err != nil {
		return err
	}
	if err := s.rlock(); err != nil {
		return err
	}
	mu := s.stripe(hex)
	mu.Lock()
	rec, err := s.getBlob(d)
	if err == nil {
		err = s.update(func(txn *badger.Txn) error { return txn.Delete(blobKey(d)) })
		if err == nil {
			s.usedBytes.Add(-rec.size)
			s.usedBlobs.Add(-1)
			if rerr := os.Remove(s.blobPath(hex)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				s.leftFile("removing blob file", "digest", d, "err", rerr)
			}
		}
	}
	mu.Unlock()
	s.closeMu.RUnlock()
	if err != nil {
		return err
	}
	s.forgetAccess(d)
	s.obs.removed(d)
	return nil
}

// walkPage bounds how many records Walk reads per index transaction; fn is
// called between transactions, without locks, so it may call Delete.
const walkPage = 1024

// Walk calls fn for every indexed blob, in digest order, until fn returns an
// error, which Walk returns. Blobs added or removed during the walk may or
// may not be seen.
func (s *Store) Walk(fn func(BlobInfo) error) error {
	var after []byte
	for {
		if err := s.rlock(); err != nil {
			return err
		}
		var page []BlobInfo
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: blobPrefix(), PrefetchValues: true, PrefetchSize: 100})
			defer it.Close()
			if after == nil {
				it.Rewind()
			} else {
				it.Seek(after)
				if it.Valid() && bytes.Equal(it.Item().Key(), after) {
					it.Next()
				}
			}
			for ; it.Valid() && len(page) < s.walkPage; it.Next() {
				item := it.Item()
				d := digest.Digest(item.Key()[2:])
				after = item.KeyCopy(after[:0])
				err := item.Value(func(v []byte) error {
					rec, err := decodeBlob(v)
					if err != nil {
						s.log.Warn("skipping corrupt blob record", "key", string(d))
						return nil
					}
					page = append(page, rec.info(d))
					return nil
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
		s.closeMu.RUnlock()
		if err != nil {
			return fmt.Errorf("cache: walk index: %w", err)
		}
		for _, info := range page {
			if err := fn(s.withAccess(info)); err != nil {
				return err
			}
		}
		if len(page) < s.walkPage {
			return nil
		}
	}
}
