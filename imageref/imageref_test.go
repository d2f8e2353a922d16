package imageref

import (
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
)

var hex64 = strings.Repeat("a", 64)

func TestParse(t *testing.T) {
	d := "sha256:" + hex64
	tests := []struct{ in, want, tag string }{
		{"alpine", "docker.io/library/alpine:latest", "latest"},
		{"  alpine:3.20\n", "docker.io/library/alpine:3.20", "3.20"},
		{"docker.io/library/alpine:3.20", "docker.io/library/alpine:3.20", "3.20"},
		{"index.docker.io/org/app", "docker.io/org/app:latest", "latest"},
		{"index.docker.io/alpine", "docker.io/library/alpine:latest", "latest"},
		{"registry-1.docker.io/alpine", "docker.io/library/alpine:latest", "latest"},
		{"registry.hub.docker.com/alpine:3", "docker.io/library/alpine:3", "3"},
		{"Registry.Hub.Docker.com/org/app", "docker.io/org/app:latest", "latest"},
		{"ghcr.io/org/app:v1", "ghcr.io/org/app:v1", "v1"},
		{"GHCR.io/org/app", "ghcr.io/org/app:latest", "latest"},
		{"ghcr.io/alpine", "ghcr.io/alpine:latest", "latest"},
		{"registry.corp:5000/team/app@" + d, "registry.corp:5000/team/app@" + d, ""},
		{"alpine:3.20@" + d, "docker.io/library/alpine@" + d, "3.20"},
		{"127.0.0.1:5000/x/y:z", "127.0.0.1:5000/x/y:z", "z"},
		{"localhost/x", "localhost/x:latest", "latest"},
		{"localhost:5000/x", "localhost:5000/x:latest", "latest"},
		{"[::1]:5000/x/y", "[::1]:5000/x/y:latest", "latest"},
		{"a/b/c/d", "docker.io/a/b/c/d:latest", "latest"},
	}
	for _, tt := range tests {
		r, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if r.String() != tt.want || r.Tag != tt.tag {
			t.Errorf("Parse(%q) = %s (tag %q), want %s (tag %q)", tt.in, r, r.Tag, tt.want, tt.tag)
		}
	}
}

func TestParseInvalid(t *testing.T) {
	for _, bad := range []string{
		"", " ", "UPPER/case", "Alpine", "a@sha256:zz", "a:b:c", "a@md5:" + strings.Repeat("a", 32),
		"a@sha512:" + strings.Repeat("a", 128), "a..b", "-a", "a/", "/a", "a//b", "a:", "a:.x",
		"a:" + strings.Repeat("t", 129), "ghcr.io/", "bad_host.io/x", "-bad.io/x", "a b", "a@",
		"docker.io/" + strings.Repeat("a", 256), "x@sha256:" + strings.ToUpper(hex64),
	} {
		if r, err := Parse(bad); !errors.Is(err, ErrInvalidReference) {
			t.Errorf("Parse(%q) = %+v, %v; want ErrInvalidReference", bad, r, err)
		}
	}
}

func TestCanonicalRegistry(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io": "docker.io", "index.docker.io": "docker.io", "registry-1.docker.io": "docker.io",
		"registry.hub.docker.com": "docker.io", "INDEX.DOCKER.IO": "docker.io",
		"ghcr.io": "ghcr.io", "Quay.IO": "quay.io", "hub.docker.com": "hub.docker.com", "": "",
	} {
		if got := CanonicalRegistry(in); got != want {
			t.Errorf("CanonicalRegistry(%q) = %q, want %q", in, got, want)
		}
		if got := IsDockerHub(in); got != (want == DockerHub) {
			t.Errorf("IsDockerHub(%q) = %v", in, got)
		}
	}
}

func TestDefaultRepository(t *testing.T) {
	tests := []struct{ reg, repo, want string }{
		{"docker.io", "alpine", "library/alpine"},
		{"registry.hub.docker.com", "alpine", "library/alpine"},
		{"docker.io", "org/app", "org/app"},
		{"docker.io", "", ""},
		{"ghcr.io", "alpine", "alpine"},
	}
	for _, tt := range tests {
		if got := DefaultRepository(tt.reg, tt.repo); got != tt.want {
			t.Errorf("DefaultRepository(%q, %q) = %q, want %q", tt.reg, tt.repo, got, tt.want)
		}
	}
}

func TestValidRepository(t *testing.T) {
	for _, n := range []string{"alpine", "library/alpine", "a/b/c/d", "my-org/my_app", "a__b", "a.b/c", "x---y", "0/1", strings.Repeat("a", 255)} {
		if !ValidRepository(n) {
			t.Errorf("ValidRepository(%q) = false", n)
		}
	}
	for _, n := range []string{"", "Alpine", "a//b", "/a", "a/", "-a", "a-", "a_-b", "a..b", "../etc", "a/../b", "a b", "a\x00b", strings.Repeat("a", 256), "a%2fb", "a___b"} {
		if ValidRepository(n) {
			t.Errorf("ValidRepository(%q) = true", n)
		}
	}
}

func TestValidTag(t *testing.T) {
	for _, s := range []string{"latest", "v1.2.3-rc_1", "_x", "A", strings.Repeat("t", 128)} {
		if !ValidTag(s) {
			t.Errorf("ValidTag(%q) = false", s)
		}
	}
	for _, s := range []string{"", ".hidden", "-x", strings.Repeat("t", 129), "a/b", "a:b", "a b", "é"} {
		if ValidTag(s) {
			t.Errorf("ValidTag(%q) = true", s)
		}
	}
}

func TestCheckDigest(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{"sha256:" + hex64, nil},
		{"sha256:" + hex64[:63], ErrInvalidDigest},
		{"sha256:" + strings.ToUpper(hex64), ErrInvalidDigest},
		{"sha256:" + hex64 + "/", ErrInvalidDigest},
		{"xyz", ErrInvalidDigest},
		{"", ErrInvalidDigest},
		{"sha512:" + strings.Repeat("a", 128), ErrUnsupportedDigest},
		{"md5:" + strings.Repeat("a", 32), ErrUnsupportedDigest},
	}
	for _, tt := range tests {
		err := CheckDigest(digest.Digest(tt.in))
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("CheckDigest(%q) = %v, want %v", tt.in, err, tt.want)
		}
		if tt.want == ErrUnsupportedDigest && !errors.Is(err, ErrInvalidDigest) {
			t.Errorf("CheckDigest(%q) = %v, want it to be an ErrInvalidDigest too", tt.in, err)
		}
		if tt.want == ErrInvalidDigest && errors.Is(err, ErrUnsupportedDigest) {
			t.Errorf("CheckDigest(%q) = %v: a malformed digest is not an unsupported one", tt.in, err)
		}
		if d, perr := ParseDigest(tt.in); (perr == nil) != (err == nil) || (perr == nil && d.String() != tt.in) {
			t.Errorf("ParseDigest(%q) = %q, %v disagrees with CheckDigest", tt.in, d, perr)
		}
	}
}

// FuzzParse: Parse never panics; what it accepts is canonical (registry
// lowercase and never a Docker Hub alias, repository and tag in the
// grammar, digest sha256), reads back the same from its String, and is a
// reference go-containerregistry accepts too.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"alpine", "alpine:3.20", "ghcr.io/org/app:v1", "index.docker.io/alpine",
		"registry.hub.docker.com/org/app@sha256:" + hex64, "localhost:5000/a/b:c",
		"[::1]:5000/x", "a:b:c", "a@sha256:zz", "A/B",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidReference) {
				t.Fatalf("Parse(%q) error %v is not ErrInvalidReference", s, err)
			}
			return
		}
		if r.Registry != CanonicalRegistry(r.Registry) || !ValidRegistry(r.Registry) {
			t.Fatalf("Parse(%q): registry %q not canonical", s, r.Registry)
		}
		if !ValidRepository(r.Repo) || r.Repo != DefaultRepository(r.Registry, r.Repo) {
			t.Fatalf("Parse(%q): repository %q not valid and defaulted", s, r.Repo)
		}
		if r.Digest != "" && CheckDigest(r.Digest) != nil {
			t.Fatalf("Parse(%q): digest %q accepted", s, r.Digest)
		}
		if r.Digest == "" && !ValidTag(r.Tag) {
			t.Fatalf("Parse(%q): tag %q accepted", s, r.Tag)
		}
		back, err := Parse(r.String())
		if err != nil || back.String() != r.String() {
			t.Fatalf("Parse(%q) = %s, which reads back as %s, %v", s, r, back, err)
		}
		if _, err := name.ParseReference(r.String(), name.StrictValidation); err != nil {
			t.Fatalf("Parse(%q) = %s, which go-containerregistry refuses: %v", s, r, err)
		}
	})
}

// FuzzCheckDigest: an accepted digest is safe to build a path from.
func FuzzCheckDigest(f *testing.F) {
	f.Add("sha256:" + hex64)
	f.Add("sha256:../../etc")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			return
		}
		if d.Algorithm() != digest.SHA256 || len(d.Encoded()) != 64 || strings.Trim(d.Encoded(), "0123456789abcdef") != "" {
			t.Fatalf("ParseDigest(%q) accepted %q", s, d)
		}
	})
}

// The grammar's regular expressions (distribution/reference/regexp.go),
// which the hand-written checks must equal.
var (
	pathComponentRE = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
	repoRE          = regexp.MustCompile(`^` + pathComponentRE + `(?:/` + pathComponentRE + `)*$`)
	tagRE           = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
)

// checkGrammar fails t if a hand-written check disagrees with its regular
// expression (or, for digests, with go-digest's Validate) on s.
func checkGrammar(t *testing.T, s string) {
	t.Helper()
	if got, want := validRepo(s), repoRE.MatchString(s); got != want {
		t.Fatalf("validRepo(%q) = %v, the regexp says %v", s, got, want)
	}
	if got, want := ValidTag(s), tagRE.MatchString(s); got != want {
		t.Fatalf("ValidTag(%q) = %v, the regexp says %v", s, got, want)
	}
	d := digest.Digest(s)
	want := d.Validate() == nil && d.Algorithm() == digest.SHA256
	if got := CheckDigest(d) == nil; got != want {
		t.Fatalf("CheckDigest(%q) = %v, go-digest says %v", s, got, want)
	}
	if isSHA256(s) && !want {
		t.Fatalf("isSHA256(%q) accepts what go-digest refuses", s)
	}
}

// FuzzGrammarMatchesRegexp: the hand-written name, tag and digest checks
// accept exactly what the grammar's regular expressions accept.
func FuzzGrammarMatchesRegexp(f *testing.F) {
	for _, s := range []string{"alpine", "library/alpine", "a__b", "a___b", "a_-b", "x---y/z", "a..b", "a/", "/a", "v1.2.3-rc_1", ".x", "sha256:" + hex64, "sha256:" + strings.ToUpper(hex64), "sha512:" + strings.Repeat("a", 128)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkGrammar(t, s) })
}

// TestGrammarMatchesRegexpRandom is the differential check on random
// strings over the grammar's alphabet, run with every go test.
func TestGrammarMatchesRegexpRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 3))
	const alphabet = "ab09Z._-/_-:é"
	for range 200000 {
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		checkGrammar(t, string(b))
	}
	for range 20000 { // digests: "sha256:" and 64 characters, some off
		b := []byte("sha256:" + hex64)
		for range r.IntN(3) {
			b[r.IntN(len(b))] = "0fgA:/"[r.IntN(6)]
		}
		checkGrammar(t, string(b[:len(b)-r.IntN(2)]))
	}
}
