package cache

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

func TestInvalidDigestRejected(t *testing.T) {
	s := openStore(t, "")
	_, good := blob(1, 1)
	hex := good.Encoded()
	for _, d := range []digest.Digest{
		"",
		"sha256:",
		"sha256:" + digest.Digest(hex[:63]),
		"sha256:" + digest.Digest(strings.ToUpper(hex)),
		"sha256:" + digest.Digest(hex) + "0",
		"sha512:" + digest.Digest(hex+hex),
		"sha384:" + digest.Digest(hex[:96/2]+hex[:96/2]),
		"sha256:../../../../etc/passwd",
		"sha256:" + digest.Digest(hex[:62]) + "/x",
		digest.Digest(hex),
		"SHA256:" + digest.Digest(hex),
	} {
		errs := map[string]error{
			"Stat":         func() error { _, err := s.Stat(d); return err }(),
			"Open":         func() error { _, _, err := s.Open(d); return err }(),
			"Create":       func() error { _, err := s.Create(d, "x"); return err }(),
			"Put":          func() error { _, err := s.Put(d, "x", nil); return err }(),
			"ReadAll":      func() error { _, _, err := s.ReadAll(d, 10); return err }(),
			"Delete":       s.Delete(d),
			"SetMediaType": s.SetMediaType(d, "x"),
			"AddLink":      s.AddLink("r", "a", d),
			"HasLink":      func() error { _, err := s.HasLink("r", "a", d); return err }(),
			"SetTag":       s.SetTag("r", "a", "t", TagRecord{Digest: d}),
		}
		for name, err := range errs {
			if !errors.Is(err, ErrInvalidDigest) {
				t.Errorf("%s(%q) = %v, want ErrInvalidDigest", name, d, err)
			}
		}
	}
	if got := files(t, s.Dir()+"/tmp"); len(got) != 0 {
		t.Fatalf("tmp/ holds %v", got)
	}
}

func TestTagsLinksTagLists(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	_, d1 := blob(1, 1)
	_, d2 := blob(2, 2)
	at := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)

	if _, err := s.Tag("docker.io", "library/alpine", "3"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Tag of unknown: %v", err)
	}
	rec := TagRecord{Digest: d1, MediaType: "application/vnd.oci.image.index.v1+json", CheckedAt: at}
	if err := s.SetTag("docker.io", "library/alpine", "3", rec); err != nil {
		t.Fatal(err)
	}
	got, err := s.Tag("docker.io", "library/alpine", "3")
	if err != nil || got.Digest != rec.Digest || got.MediaType != rec.MediaType || !got.CheckedAt.Equal(at) {
		t.Fatalf("Tag = %+v, %v; want %+v", got, err, rec)
	}
	if err := s.SetTag("docker.io", "library/alpine", "3", TagRecord{Digest: d2}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Tag("docker.io", "library/alpine", "3"); got.Digest != d2 || !got.CheckedAt.IsZero() || got.MediaType != "" {
		t.Fatalf("overwritten Tag = %+v", got)
	}

	if ok, err := s.HasLink("docker.io", "library/alpine", d1); ok || err != nil {
		t.Fatalf("HasLink before AddLink = %v, %v", ok, err)
	}
	if err := s.AddLink("docker.io", "library/alpine", d1); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.HasLink("docker.io", "library/alpine", d1); !ok || err != nil {
		t.Fatalf("HasLink = %v, %v", ok, err)
	}

	if _, err := s.TagList("docker.io", "library/alpine"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("TagList of unknown: %v", err)
	}
	body := []byte(`{"name":"library/alpine","tags":["3","latest"]}`)
	if err := s.SetTagList("docker.io", "library/alpine", body); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTagList("docker.io", "library/alpine", make([]byte, MaxTagListSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized tag list: %v", err)
	}
	if err := s.SetTagList("docker.io", "library/empty", nil); err != nil {
		t.Fatal(err)
	}

	s.Close()
	s = openStore(t, dir)
	if got, err := s.TagList("docker.io", "library/alpine"); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("TagList after reopen = %q, %v", got, err)
	}
	if got, err := s.TagList("docker.io", "library/empty"); err != nil || len(got) != 0 {
		t.Fatalf("empty TagList = %q, %v", got, err)
	}
	if ok, _ := s.HasLink("docker.io", "library/alpine", d1); !ok {
		t.Fatal("link lost across reopen")
	}
	if got, _ := s.Tag("docker.io", "library/alpine", "3"); got.Digest != d2 {
		t.Fatal("tag lost across reopen")
	}
}

func TestKeysDoNotCollide(t *testing.T) {
	s := openStore(t, "")
	_, d := blob(1, 1)
	rec := TagRecord{Digest: d}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.SetTag("reg", "repo", "t", rec))
	must(s.AddLink("reg", "repo", d))
	must(s.SetTagList("reg", "repo", []byte("x")))
	must(s.SetTag("reg", "x/y", "a", rec))

	// Neighbours that share a prefix must not see these records.
	for _, c := range [][3]string{
		{"reg", "repo-other", "t"},
		{"reg", "rep", "t"},
		{"reg", "repo/t", "t"},
		{"reg-other", "repo", "t"},
		{"re", "grepo", "t"},
		{"reg", "x", "y/a"},
	} {
		if _, err := s.Tag(c[0], c[1], c[2]); !errors.Is(err, ErrNotFound) {
			t.Errorf("Tag(%q, %q, %q) = %v, want ErrNotFound", c[0], c[1], c[2], err)
		}
		if ok, _ := s.HasLink(c[0], c[1], d); ok {
			t.Errorf("HasLink(%q, %q) found the link of reg/repo", c[0], c[1])
		}
		if _, err := s.TagList(c[0], c[1]); !errors.Is(err, ErrNotFound) {
			t.Errorf("TagList(%q, %q) = %v", c[0], c[1], err)
		}
	}

	// Parts with the separator, empty or oversized are refused everywhere:
	// repo "x" with tag "y\x00a"-style tricks would otherwise spell another
	// record's key.
	long := strings.Repeat("a", maxKeyPart+1)
	for _, c := range [][3]string{
		{"reg", "x\x00y", "a"},
		{"reg\x00x", "y", "a"},
		{"reg", "x", "y\x00a"},
		{"", "repo", "t"},
		{"reg", "", "t"},
		{"reg", "repo", ""},
		{"reg", long, "t"},
		{"reg", "repo", long},
	} {
		if _, err := s.Tag(c[0], c[1], c[2]); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Tag(%q) = %v, want ErrInvalidKey", c, err)
		}
		if err := s.SetTag(c[0], c[1], c[2], rec); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("SetTag(%q) = %v, want ErrInvalidKey", c, err)
		}
	}
	for _, c := range [][2]string{
		{"reg", "x\x00y"},
		{"reg\x00x", "y"},
		{"", "repo"},
		{"reg", ""},
		{long, "repo"},
	} {
		errs := map[string]error{
			"AddLink":    s.AddLink(c[0], c[1], d),
			"HasLink":    func() error { _, err := s.HasLink(c[0], c[1], d); return err }(),
			"TagList":    func() error { _, err := s.TagList(c[0], c[1]); return err }(),
			"SetTagList": s.SetTagList(c[0], c[1], nil),
		}
		for name, err := range errs {
			if !errors.Is(err, ErrInvalidKey) {
				t.Errorf("%s(%q) = %v, want ErrInvalidKey", name, c, err)
			}
		}
	}
}

func TestRecordEncoding(t *testing.T) {
	now := time.Unix(0, 1_700_000_000_123_456_789)
	for _, r := range []blobRecord{
		{},
		{size: 1 << 40, mediaType: "application/vnd.oci.image.manifest.v1+json", created: now, lastAccess: now.Add(time.Hour)},
	} {
		got, err := decodeBlob(r.encode())
		if err != nil || got.size != r.size || got.mediaType != r.mediaType ||
			!got.created.Equal(r.created) || !got.lastAccess.Equal(r.lastAccess) {
			t.Errorf("round trip of %+v = %+v, %v", r, got, err)
		}
	}
	for _, b := range [][]byte{nil, {2}, {valueVersion, 0, 0}, append([]byte{valueVersion, 0x80}, make([]byte, 24)...)} {
		if _, err := decodeBlob(b); err == nil {
			t.Errorf("decodeBlob(%x) accepted", b)
		}
	}
	if _, err := decodeTag([]byte{valueVersion, 0, 0, 0, 0, 0, 0, 0, 0, 10, 'x'}); err == nil {
		t.Error("decodeTag accepted a short digest")
	}
}
