package cache

import (
	"errors"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

func TestPinsTagsLinks(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b := digest.FromString("a"), digest.FromString("b")
	if err := s.SetPin("docker.io/library/alpine:3.20", []digest.Digest{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPin("ghcr.io/org/app@"+a.String(), []digest.Digest{a}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPin("bad", []digest.Digest{"sha256:nothex"}); !errors.Is(err, ErrInvalidDigest) {
		t.Fatalf("SetPin with a bad digest: %v", err)
	}
	got := map[string][]digest.Digest{}
	if err := s.Pins(func(name string, ds []digest.Digest) error { got[name] = ds; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || len(got["docker.io/library/alpine:3.20"]) != 2 || got["ghcr.io/org/app@"+a.String()][0] != a {
		t.Fatalf("pins = %v", got)
	}
	if err := s.DeletePin("docker.io/library/alpine:3.20"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePin("docker.io/library/alpine:3.20"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second DeletePin: %v", err)
	}

	now := time.Unix(1700000000, 0)
	for _, tag := range []struct{ reg, repo, tag string }{{"docker.io", "library/alpine", "3.20"}, {"docker.io", "library/alpine-other", "1"}, {"ghcr.io", "library/alpine", "3.20"}} {
		if err := s.SetTag(tag.reg, tag.repo, tag.tag, TagRecord{Digest: a, MediaType: "m", CheckedAt: now}); err != nil {
			t.Fatal(err)
		}
		if err := s.AddLink(tag.reg, tag.repo, b); err != nil {
			t.Fatal(err)
		}
	}
	var tags, links []string
	s.Tags(func(reg, repo, tag string, rec TagRecord) error {
		if rec.Digest != a || !rec.CheckedAt.Equal(now) {
			t.Errorf("tag record %+v", rec)
		}
		tags = append(tags, reg+"/"+repo+":"+tag)
		return nil
	})
	s.Links(func(reg, repo string, d digest.Digest) error {
		links = append(links, reg+"/"+repo+"@"+d.String())
		return nil
	})
	want := []string{"docker.io/library/alpine:3.20", "docker.io/library/alpine-other:1", "ghcr.io/library/alpine:3.20"}
	if len(tags) != 3 || tags[0] != want[0] || tags[1] != want[1] || tags[2] != want[2] {
		t.Fatalf("tags = %v, want %v", tags, want)
	}
	if len(links) != 3 {
		t.Fatalf("links = %v", links)
	}
}

func TestScanPagesAndStops(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = walkPage*2 + 7
	d := digest.FromString("x")
	for i := 0; i < n; i++ {
		if err := s.SetTag("r", "repo", "t"+string(rune('a'+i%26))+time.Duration(i).String(), TagRecord{Digest: d}); err != nil {
			t.Fatal(err)
		}
	}
	count := 0
	if err := s.Tags(func(_, _, _ string, _ TagRecord) error { count++; return nil }); err != nil {
		t.Fatal(err)
	}
	if count != n {
		t.Fatalf("scanned %d tags, want %d", count, n)
	}
	count = 0
	s.Tags(func(_, _, _ string, _ TagRecord) error {
		count++
		if count == 5 {
			return errStopScan
		}
		return nil
	})
	if count != 5 {
		t.Fatalf("stopped after %d, want 5", count)
	}
}
