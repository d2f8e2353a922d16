package cache

import (
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
	digest "github.com/opencontainers/go-digest"
)

// SetMediaType replaces the media type recorded for blob d. Import uses it
// (it is archive.MediaTypeSetter) when an archive names a blob's type only
// after the blob has been stored. The error wraps ErrNotFound if d is absent.
func (s *Store) SetMediaType(d digest.Digest, mediaType string) error {
	hex, err := validateDigest(d)
	if err != nil {
		return err
	}
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	mu := s.stripe(hex)
	mu.Lock()
	defer mu.Unlock()
	return s.update(func(txn *badger.Txn) error {
		rec, err := blobInTxn(txn, d)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: blob %s", ErrNotFound, d)
		}
		if err != nil {
			return err
		}
		if rec.mediaType == mediaType {
			return nil
		}
		rec.mediaType = mediaType
		return txn.Set(blobKey(d), rec.encode())
	})
}
