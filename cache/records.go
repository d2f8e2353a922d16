package cache

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
	digest "github.com/opencontainers/go-digest"
)

// prefixPin keys image pins: p 0x00 <name> → ver | digest 0x00 digest …
// A pin names an image ("docker.io/library/alpine:3.20") and lists every
// digest of its graph (index, manifests, configs, layers) as resolved when
// it was pinned. Eviction never removes a digest any pin lists.
const prefixPin = 'p'

// SetPin records (or replaces) the pin called name over digests.
func (s *Store) SetPin(name string, digests []digest.Digest) error {
	if err := validateParts(name); err != nil {
		return err
	}
	v := []byte{valueVersion}
	for i, d := range digests {
		if _, err := validateDigest(d); err != nil {
			return err
		}
		if i > 0 {
			v = append(v, sep)
		}
		v = append(v, d...)
	}
	return s.set(makeKey(prefixPin, name), v)
}

// DeletePin removes the pin called name; ErrNotFound if there is none.
func (s *Store) DeletePin(name string) error {
	if err := validateParts(name); err != nil {
		return err
	}
	key := makeKey(prefixPin, name)
	if _, err := s.get(key, "pin "+name); err != nil {
		return err
	}
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	return s.update(func(txn *badger.Txn) error { return txn.Delete(key) })
}

// Pins calls fn for every pin, in name order.
func (s *Store) Pins(fn func(name string, digests []digest.Digest) error) error {
	return s.scan(prefixPin, func(parts []string, v []byte) error {
		if len(parts) != 1 || len(v) < 1 || v[0] != valueVersion {
			return fmt.Errorf("cache: pin %q: %w", parts, errCorrupt)
		}
		var ds []digest.Digest
		if len(v) > 1 {
			for _, p := range bytes.Split(v[1:], []byte{sep}) {
				ds = append(ds, digest.Digest(p))
			}
		}
		return fn(parts[0], ds)
	})
}

// Tags calls fn for every tag record, ordered by registry, repository, tag.
func (s *Store) Tags(fn func(registry, repo, tag string, rec TagRecord) error) error {
	return s.scan(prefixTag, func(parts []string, v []byte) error {
		if len(parts) != 3 {
			return fmt.Errorf("cache: tag key %q: %w", parts, errCorrupt)
		}
		rec, err := decodeTag(v)
		if err != nil {
			return fmt.Errorf("cache: tag %s/%s:%s: %w", parts[0], parts[1], parts[2], err)
		}
		return fn(parts[0], parts[1], parts[2], rec)
	})
}

// Links calls fn for every repository link, ordered by registry and
// repository.
func (s *Store) Links(fn func(registry, repo string, d digest.Digest) error) error {
	return s.scan(prefixLink, func(parts []string, _ []byte) error {
		if len(parts) != 3 {
			return fmt.Errorf("cache: link key %q: %w", parts, errCorrupt)
		}
		return fn(parts[0], parts[1], digest.Digest(parts[2]))
	})
}

// errStopScan ends a scan early without an error.
var errStopScan = errors.New("stop")

// scan calls fn for every record of one type, a page at a time, with no
// lock held during fn (which may therefore write to the store).
func (s *Store) scan(prefix byte, fn func(parts []string, value []byte) error) error {
	type record struct {
		parts []string
		value []byte
	}
	pfx := []byte{prefix, sep}
	var after []byte
	for {
		if err := s.rlock(); err != nil {
			return err
		}
		var page []record
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: pfx, PrefetchValues: true, PrefetchSize: 100})
			defer it.Close()
			it.Seek(pfx)
			if after != nil {
				it.Seek(after)
				if it.ValidForPrefix(pfx) && bytes.Equal(it.Item().Key(), after) {
					it.Next()
				}
			}
			for ; it.ValidForPrefix(pfx) && len(page) < walkPage; it.Next() {
				item := it.Item()
				v, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				key := item.KeyCopy(nil)
				page = append(page, record{strings.Split(string(key[2:]), string(rune(sep))), v})
				after = key
			}
			return nil
		})
		s.closeMu.RUnlock()
		if err != nil {
			return fmt.Errorf("cache: scan: %w", err)
		}
		for _, r := range page {
			if err := fn(r.parts, r.value); err != nil {
				if errors.Is(err, errStopScan) {
					return nil
				}
				return err
			}
		}
		if len(page) < walkPage {
			return nil
		}
	}
}
