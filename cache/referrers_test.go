package cache

import (
	"errors"
	"testing"
)

// TestReferrersOwnRecord: a referrers answer is kept per subject under its
// own record type, apart from tag lists, with its inputs validated.
func TestReferrersOwnRecord(t *testing.T) {
	s := openStore(t, "")
	_, subj := blob(10, 1)
	_, other := blob(10, 2)
	body := []byte(`{"schemaVersion":2,"manifests":[]}`)
	if _, err := s.Referrers("docker.io", "library/x", subj); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Referrers before any SetReferrers: %v, want ErrNotFound", err)
	}
	if err := s.SetReferrers("docker.io", "library/x", subj, body); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Referrers("docker.io", "library/x", subj); err != nil || string(got) != string(body) {
		t.Fatalf("Referrers = %q, %v", got, err)
	}
	for _, q := range []struct{ reg, repo string }{{"docker.io", "library/y"}, {"quay.io", "library/x"}} {
		if _, err := s.Referrers(q.reg, q.repo, subj); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Referrers(%s, %s) = %v, want ErrNotFound", q.reg, q.repo, err)
		}
	}
	if _, err := s.Referrers("docker.io", "library/x", other); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another subject: %v, want ErrNotFound", err)
	}
	// Nothing of it shows as a tag list, under the repository or the old
	// pseudo-repository.
	if _, err := s.TagList("docker.io", "library/x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("TagList: %v, want ErrNotFound", err)
	}
	if _, err := s.TagList("docker.io", "library/x@referrers/"+subj.String()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("TagList of the old pseudo-repository: %v, want ErrNotFound", err)
	}
	if err := s.SetReferrers("docker.io", "library/x", "sha256:nope", body); !errors.Is(err, ErrInvalidDigest) {
		t.Fatalf("bad subject: %v", err)
	}
	if err := s.SetReferrers("docker.io", "a\x00b", subj, body); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("bad repo: %v", err)
	}
	if err := s.SetReferrers("docker.io", "library/x", subj, make([]byte, MaxReferrersSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized body: %v", err)
	}
}

// TestReferrersMigratedAtOpen: answers an older version kept in tag-list
// records under "<repo>@referrers/<digest>" are moved to their own record
// at the next Open (after a clean stop or a crash alike); an unparsable one
// is dropped; real tag lists are left alone.
func TestReferrersMigratedAtOpen(t *testing.T) {
	for _, crash := range []bool{false, true} {
		dir := t.TempDir()
		_, subj := blob(10, 3)
		body := []byte(`{"schemaVersion":2,"manifests":[{"artifactType":"sig"}]}`)
		s := openStore(t, dir)
		must(t, s.SetTagList("docker.io", "library/x@referrers/"+subj.String(), body))
		must(t, s.SetTagList("docker.io", "library/x@referrers/sha256:short", body))
		must(t, s.SetTagList("docker.io", "library/x", []byte(`{"tags":["1"]}`)))
		must(t, s.Close())
		if crash {
			simulateCrash(t, dir)
		}

		s = openStore(t, dir)
		if got, err := s.Referrers("docker.io", "library/x", subj); err != nil || string(got) != string(body) {
			t.Fatalf("crash=%v: Referrers after the move = %q, %v", crash, got, err)
		}
		for _, old := range []string{"library/x@referrers/" + subj.String(), "library/x@referrers/sha256:short"} {
			if _, err := s.TagList("docker.io", old); !errors.Is(err, ErrNotFound) {
				t.Fatalf("crash=%v: old record %s still there: %v", crash, old, err)
			}
		}
		if got, err := s.TagList("docker.io", "library/x"); err != nil || string(got) != `{"tags":["1"]}` {
			t.Fatalf("crash=%v: the real tag list = %q, %v", crash, got, err)
		}
		must(t, s.Close())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
