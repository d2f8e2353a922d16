package imageref

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// DockerHub is the name regmirror gives Docker Hub: the one the Docker
// daemon's mirror requests mean and the key of its cache records.
const DockerHub = "docker.io"

// DefaultTag is the tag a reference without tag or digest names.
const DefaultTag = "latest"

// MaxRepositoryLength is distribution's limit on a repository name.
const MaxRepositoryLength = 255

var (
	// ErrInvalidReference: a reference that does not parse, or whose parts
	// break the grammar.
	ErrInvalidReference = errors.New("invalid image reference")
	// ErrInvalidDigest: not a well-formed digest, or not a sha256 one.
	ErrInvalidDigest = errors.New("invalid digest")
	// ErrUnsupportedDigest: a digest of another algorithm than sha256. It
	// is also an ErrInvalidDigest.
	ErrUnsupportedDigest = fmt.Errorf("%w: only sha256 digests are supported", ErrInvalidDigest)
)

// dockerHubAliases are the other names clients use for Docker Hub.
var dockerHubAliases = map[string]bool{
	"index.docker.io":         true, // the Docker daemon's and go-containerregistry's name
	"registry-1.docker.io":    true, // where the registry API answers
	"registry.hub.docker.com": true, // the Hub's old API host, still in configs
}

// CanonicalRegistry lowercases a registry host and maps Docker Hub's other
// names to DockerHub.
func CanonicalRegistry(host string) string {
	host = strings.ToLower(host)
	if dockerHubAliases[host] {
		return DockerHub
	}
	return host
}

// IsDockerHub tells whether host names Docker Hub (any of its aliases).
func IsDockerHub(host string) bool { return CanonicalRegistry(host) == DockerHub }

// DefaultRepository applies Docker Hub's defaulting: on Docker Hub a
// single-component name gets "library/" ("alpine" → "library/alpine");
// other registries' names are returned unchanged.
func DefaultRepository(registry, repo string) string {
	if repo != "" && !strings.Contains(repo, "/") && IsDockerHub(registry) {
		return "library/" + repo
	}
	return repo
}

// IsHost tells whether the first component of a name is meant as a
// registry host, by the rule Docker's reference parser uses: it has a dot
// or a port, or it is "localhost".
func IsHost(component string) bool {
	return strings.ContainsAny(component, ".:") || component == "localhost"
}

// SplitName splits a name without tag or digest into its canonical
// registry and defaulted repository: "alpine" → ("docker.io",
// "library/alpine"), "ghcr.io/org/app" → ("ghcr.io", "org/app"). Nothing is
// validated.
func SplitName(name string) (registry, repo string) {
	registry, repo = DockerHub, name
	if first, rest, ok := strings.Cut(name, "/"); ok && IsHost(first) {
		registry, repo = CanonicalRegistry(first), rest
	}
	return registry, DefaultRepository(registry, repo)
}

// The distribution reference grammar (distribution/reference/regexp.go),
// restated: lowercase alphanumeric components joined by separators, split
// by '/'; tags are at most 128 word characters, dots and dashes; a host is
// DNS labels or a bracketed IPv6 address, with an optional port.
// Repository names and tags, checked on every request, are matched by hand
// (validRepo, ValidTag); the grammar's regular expressions are kept in the
// tests, which prove the hand-written checks equal them
// (FuzzGrammarMatchesRegexp).
var (
	label      = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
	hostRegexp = regexp.MustCompile(`^` + label + `(?:\.` + label + `)*$`)
	portRegexp = regexp.MustCompile(`^[0-9]+$`)
)

// ValidRepository tells whether repo (without registry) follows the
// repository grammar and length limit.
func ValidRepository(repo string) bool {
	return len(repo) > 0 && len(repo) <= MaxRepositoryLength && validRepo(repo)
}

// validRepo is `^C(?:/C)*$` with C = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`:
// components split by '/', each starting and ending with [a-z0-9], and
// every run of separators inside one is ".", "_", "__" or dashes only.
func validRepo(s string) bool {
	prev := byte('/') // the class of the byte before: '/', 'a' (alphanumeric), or the separator
	run := 0          // length of the current run of separators
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z' || '0' <= c && c <= '9':
			prev, run = 'a', 0
		case c == '/':
			if prev != 'a' {
				return false
			}
			prev = '/'
		case c == '.' || c == '_' || c == '-':
			switch {
			case prev == 'a':
				prev, run = c, 1
			case prev == c && (c == '-' || c == '_' && run == 1):
				run++
			default:
				return false
			}
		default:
			return false
		}
	}
	return prev == 'a'
}

// ValidTag tells whether tag follows the tag grammar,
// `^[\w][\w.-]{0,127}$`.
func ValidTag(tag string) bool {
	if len(tag) == 0 || len(tag) > 128 || !isWord(tag[0]) {
		return false
	}
	for i := 1; i < len(tag); i++ {
		if c := tag[i]; !isWord(c) && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

func isWord(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_'
}

// ValidRegistry tells whether host is a registry host[:port]: DNS labels
// or a bracketed IPv6 address, and an optional numeric port.
func ValidRegistry(host string) bool {
	if i := strings.LastIndexByte(host, ':'); i > strings.LastIndexByte(host, ']') {
		if !portRegexp.MatchString(host[i+1:]) {
			return false
		}
		host = host[:i]
	}
	if ip, ok := strings.CutPrefix(host, "["); ok {
		ip, ok = strings.CutSuffix(ip, "]")
		a, err := netip.ParseAddr(ip)
		return ok && err == nil && a.Is6() && a.Zone() == ""
	}
	return hostRegexp.MatchString(host)
}

// CheckDigest accepts only what the cache can address: a well-formed
// sha256 digest (64 lowercase hex characters).
func CheckDigest(d digest.Digest) error {
	if isSHA256(string(d)) {
		return nil // the common case, without go-digest's regular expressions
	}
	if err := d.Validate(); err != nil {
		if errors.Is(err, digest.ErrDigestUnsupported) {
			return fmt.Errorf("%w: %q", ErrUnsupportedDigest, string(d))
		}
		return fmt.Errorf("%w: %q: %v", ErrInvalidDigest, string(d), err)
	}
	if d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("%w: %q", ErrUnsupportedDigest, string(d))
	}
	return nil
}

// isSHA256 tells whether s is "sha256:" and 64 lowercase hex digits, all
// of which CheckDigest accepts.
func isSHA256(s string) bool {
	hex, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ParseDigest is CheckDigest for text.
func ParseDigest(s string) (digest.Digest, error) {
	d := digest.Digest(s)
	if err := CheckDigest(d); err != nil {
		return "", err
	}
	return d, nil
}
