package cache

import (
	"errors"
	"fmt"
	"sort"

	badger "github.com/dgraph-io/badger/v4"
	digest "github.com/opencontainers/go-digest"
)

// Records that purge and the catalog need: dropping a tag, a repository's
// links and kept tag list, listing the repositories held, and a cheap
// probe of the index for readiness. Blobs themselves are only ever removed
// through Delete.

// deleteKey removes key; ErrNotFound (naming what) if it is absent.
func (s *Store) deleteKey(key []byte, what string) error {
	if _, err := s.get(key, what); err != nil {
		return err
	}
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	return s.update(func(txn *badger.Txn) error { return txn.Delete(key) })
}

// DeleteTag removes the record of registry/repo:tag, so that the next
// request for the tag asks upstream. ErrNotFound if there is none.
func (s *Store) DeleteTag(registry, repo, tag string) error {
	if err := validateParts(registry, repo, tag); err != nil {
		return err
	}
	return s.deleteKey(makeKey(prefixTag, registry, repo, tag), "tag "+registry+"/"+repo+":"+tag)
}

// DeleteLink removes the record that blob d was seen in registry/repo
// (absent: nothing to do).
func (s *Store) DeleteLink(registry, repo string, d digest.Digest) error {
	if err := validateParts(registry, repo); err != nil {
		return err
	}
	if _, err := validateDigest(d); err != nil {
		return err
	}
	err := s.deleteKey(makeKey(prefixLink, registry, repo, string(d)), "link")
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// DeleteTagList removes the kept tags/list answer of registry/repo (absent:
// nothing to do).
func (s *Store) DeleteTagList(registry, repo string) error {
	if err := validateParts(registry, repo); err != nil {
		return err
	}
	err := s.deleteKey(makeKey(prefixTagList, registry, repo), "tag list")
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// Repositories calls fn once for every repository that holds a tag record
// or a link, ordered by registry and repository.
func (s *Store) Repositories(fn func(registry, repo string) error) error {
	seen := map[[2]string]bool{}
	collect := func(registry, repo string) { seen[[2]string{registry, repo}] = true }
	if err := s.Tags(func(registry, repo, _ string, _ TagRecord) error { collect(registry, repo); return nil }); err != nil {
		return err
	}
	if err := s.Links(func(registry, repo string, _ digest.Digest) error { collect(registry, repo); return nil }); err != nil {
		return err
	}
	all := make([][2]string, 0, len(seen))
	for k := range seen {
		all = append(all, k)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i][0] != all[j][0] {
			return all[i][0] < all[j][0]
		}
		return all[i][1] < all[j][1]
	})
	for _, k := range all {
		if err := fn(k[0], k[1]); err != nil {
			return err
		}
	}
	return nil
}

// Check reads the index; an error means it is failing (closed, or Badger
// cannot read), which readiness reports.
func (s *Store) Check() error {
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(makeKey(prefixBlob, "probe"))
		return err
	})
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("cache: index: %w", err)
	}
	return nil
}
