package cache

import (
	"fmt"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
	digest "github.com/opencontainers/go-digest"
)

// prefixReferrers keys the last referrers answer (an OCI image index) per
// subject: R 0x00 <registry> 0x00 <repo> 0x00 <subject digest> → ver | body.
const prefixReferrers = 'R'

// MaxReferrersSize caps the referrers body stored by SetReferrers.
const MaxReferrersSize = 1 << 20

// legacyReferrersMark is how the proxy once named a referrers answer kept in
// the tag-list record: the pseudo-repository "<repo>@referrers/<digest>".
const legacyReferrersMark = "@referrers/"

func referrersKey(registry, repo string, subject digest.Digest) []byte {
	return makeKey(prefixReferrers, registry, repo, string(subject))
}

// Referrers returns the last referrers answer body stored for subject in
// registry/repo; ErrNotFound if there is none.
func (s *Store) Referrers(registry, repo string, subject digest.Digest) ([]byte, error) {
	if err := validateParts(registry, repo); err != nil {
		return nil, err
	}
	if _, err := validateDigest(subject); err != nil {
		return nil, err
	}
	what := "referrers of " + registry + "/" + repo + "@" + string(subject)
	v, err := s.get(referrersKey(registry, repo, subject), what)
	if err != nil {
		return nil, err
	}
	if len(v) < 1 || v[0] != valueVersion {
		return nil, fmt.Errorf("cache: %s: %w", what, errCorrupt)
	}
	return v[1:], nil
}

// SetReferrers stores the referrers answer body for subject in
// registry/repo. Bodies over MaxReferrersSize are refused with ErrTooLarge.
func (s *Store) SetReferrers(registry, repo string, subject digest.Digest, body []byte) error {
	if err := validateParts(registry, repo); err != nil {
		return err
	}
	if _, err := validateDigest(subject); err != nil {
		return err
	}
	if len(body) > MaxReferrersSize {
		return fmt.Errorf("%w: referrers answer of %d bytes, limit %d", ErrTooLarge, len(body), MaxReferrersSize)
	}
	return s.set(referrersKey(registry, repo, subject), versioned(body))
}

// versioned prefixes body with the value version byte.
func versioned(body []byte) []byte {
	v := make([]byte, 0, 1+len(body))
	v = append(v, valueVersion)
	return append(v, body...)
}

// legacyReferrers is a referrers answer kept by an older version in a
// tag-list record; subject is empty (and the record dropped) if its name
// does not parse, body nil if its value does not.
type legacyReferrers struct {
	key      []byte
	registry string
	repo     string
	subject  digest.Digest
	body     []byte // versioned value, as stored
}

// migrateReferrers moves referrers answers that an older version kept in
// tag-list records under "<repo>@referrers/<digest>" to their own records,
// in one write batch. They are a cache of upstream's answers, but an
// offline mirror can never fetch them again, so they are kept rather than
// dropped. A record whose name does not parse is dropped. The scan reads
// the tag-list records only (one per listed repository), so it costs next
// to nothing at every Open once the move is done. It runs before the Store
// is shared.
func (s *Store) migrateReferrers() error {
	found, err := s.findLegacyReferrers()
	if err != nil || len(found) == 0 {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	moved := 0
	for _, l := range found {
		if l.subject != "" && l.body != nil {
			if err := wb.Set(referrersKey(l.registry, l.repo, l.subject), l.body); err != nil {
				return classify(err)
			}
			moved++
		}
		if err := wb.Delete(l.key); err != nil {
			return classify(err)
		}
	}
	if err := wb.Flush(); err != nil {
		return classify(err)
	}
	s.log.Info("moved kept referrers answers to their own index records", "moved", moved, "dropped", len(found)-moved)
	return nil
}

// findLegacyReferrers reads the tag-list records named like an older
// version's referrers records.
func (s *Store) findLegacyReferrers() ([]legacyReferrers, error) {
	var found []legacyReferrers
	pfx := []byte{prefixTagList, sep}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pfx, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			parts := strings.Split(string(item.Key()[2:]), string(rune(sep)))
			if len(parts) != 2 || !strings.Contains(parts[1], legacyReferrersMark) {
				continue
			}
			l := legacyReferrers{key: item.KeyCopy(nil), registry: parts[0]}
			repo, subject, _ := strings.Cut(parts[1], legacyReferrersMark)
			if validateParts(repo) == nil {
				if _, err := validateDigest(digest.Digest(subject)); err == nil {
					l.repo, l.subject = repo, digest.Digest(subject)
				}
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(v) >= 1 && v[0] == valueVersion {
				l.body = v
			}
			found = append(found, l)
		}
		return nil
	})
	return found, err
}
