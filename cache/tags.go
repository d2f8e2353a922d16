package cache

import (
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
	digest "github.com/opencontainers/go-digest"
)

// get reads the value stored at key, or fails with ErrNotFound (what names
// the record in the message).
func (s *Store) get(key []byte, what string) ([]byte, error) {
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.closeMu.RUnlock()
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, what)
	}
	if err != nil {
		return nil, fmt.Errorf("cache: read %s: %w", what, err)
	}
	return v, nil
}

func (s *Store) set(key, value []byte) error {
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	return s.update(func(txn *badger.Txn) error { return txn.Set(key, value) })
}

// Tag returns the record for registry/repo:tag.
func (s *Store) Tag(registry, repo, tag string) (TagRecord, error) {
	if err := validateParts(registry, repo, tag); err != nil {
		return TagRecord{}, err
	}
	v, err := s.get(makeKey(prefixTag, registry, repo, tag), "tag "+registry+"/"+repo+":"+tag)
	if err != nil {
		return TagRecord{}, err
	}
	rec, err := decodeTag(v)
	if err != nil {
		return TagRecord{}, fmt.Errorf("cache: tag %s/%s:%s: %w", registry, repo, tag, err)
	}
	return rec, nil
}

// SetTag stores the record for registry/repo:tag. rec.Digest must be a
// valid sha256 digest.
func (s *Store) SetTag(registry, repo, tag string, rec TagRecord) error {
	if err := validateParts(registry, repo, tag); err != nil {
		return err
	}
	if _, err := validateDigest(rec.Digest); err != nil {
		return err
	}
	return s.set(makeKey(prefixTag, registry, repo, tag), encodeTag(rec))
}

// AddLink records that blob d was seen in registry/repo. Adding a link
// that exists writes nothing.
func (s *Store) AddLink(registry, repo string, d digest.Digest) error {
	if err := validateParts(registry, repo); err != nil {
		return err
	}
	if _, err := validateDigest(d); err != nil {
		return err
	}
	key := makeKey(prefixLink, registry, repo, string(d))
	// Links are added on many requests; a present link costs no write.
	if _, err := s.get(key, "link"); err == nil {
		return nil
	}
	return s.set(key, []byte{valueVersion})
}

// HasLink reports whether blob d was seen in registry/repo.
func (s *Store) HasLink(registry, repo string, d digest.Digest) (bool, error) {
	if err := validateParts(registry, repo); err != nil {
		return false, err
	}
	if _, err := validateDigest(d); err != nil {
		return false, err
	}
	_, err := s.get(makeKey(prefixLink, registry, repo, string(d)), "link")
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// TagList returns the last tags/list answer body stored for registry/repo.
func (s *Store) TagList(registry, repo string) ([]byte, error) {
	if err := validateParts(registry, repo); err != nil {
		return nil, err
	}
	v, err := s.get(makeKey(prefixTagList, registry, repo), "tag list "+registry+"/"+repo)
	if err != nil {
		return nil, err
	}
	if len(v) < 1 || v[0] != valueVersion {
		return nil, fmt.Errorf("cache: tag list %s/%s: %w", registry, repo, errCorrupt)
	}
	return v[1:], nil
}

// SetTagList stores the tags/list answer body for registry/repo. Bodies
// over MaxTagListSize are refused with ErrTooLarge.
func (s *Store) SetTagList(registry, repo string, body []byte) error {
	if err := validateParts(registry, repo); err != nil {
		return err
	}
	if len(body) > MaxTagListSize {
		return fmt.Errorf("%w: tag list of %d bytes, limit %d", ErrTooLarge, len(body), MaxTagListSize)
	}
	return s.set(makeKey(prefixTagList, registry, repo), versioned(body))
}
