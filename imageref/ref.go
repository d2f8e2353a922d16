package imageref

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Ref is an image reference as regmirror keys it: the canonical registry
// ("docker.io"), the repository with Docker Hub defaulting applied
// ("library/alpine"), and a tag or a digest. When Digest is set it names
// the image and Tag, if any, is only what the user wrote beside it.
type Ref struct {
	Registry string
	Repo     string
	Tag      string
	Digest   digest.Digest
}

// Parse reads "alpine", "alpine:3.20", "docker.io/library/alpine@sha256:…"
// or "ghcr.io/org/app:v1" with Docker's defaulting rules (no registry means
// docker.io, no tag means latest). A reference with both a tag and a digest
// keeps both; the digest names the image. Errors are ErrInvalidReference.
func Parse(s string) (Ref, error) {
	in := s
	s = strings.TrimSpace(s)
	if s == "" {
		return Ref{}, fmt.Errorf("%w: empty", ErrInvalidReference)
	}
	var r Ref
	if name, dig, ok := strings.Cut(s, "@"); ok {
		d, err := ParseDigest(dig)
		if err != nil {
			return Ref{}, fmt.Errorf("%w %q: %v", ErrInvalidReference, in, err)
		}
		r.Digest, s = d, name
	}
	if colon := strings.LastIndexByte(s, ':'); colon > strings.LastIndexByte(s, '/') {
		r.Tag, s = s[colon+1:], s[:colon]
		if !ValidTag(r.Tag) {
			return Ref{}, fmt.Errorf("%w %q: tag %q breaks the tag grammar", ErrInvalidReference, in, r.Tag)
		}
	} else if r.Digest == "" {
		r.Tag = DefaultTag
	}
	if first, _, ok := strings.Cut(s, "/"); ok && IsHost(first) && !ValidRegistry(first) {
		return Ref{}, fmt.Errorf("%w %q: registry %q is not a host[:port]", ErrInvalidReference, in, first)
	}
	r.Registry, r.Repo = SplitName(s)
	if !ValidRepository(r.Repo) {
		return Ref{}, fmt.Errorf("%w %q: repository %q breaks the name grammar (lowercase letters, digits, separators)", ErrInvalidReference, in, r.Repo)
	}
	return r, nil
}

// Name is registry/repo, without tag or digest.
func (r Ref) Name() string { return r.Registry + "/" + r.Repo }

// String is the full reference: registry/repo:tag, or registry/repo@digest.
func (r Ref) String() string {
	if r.Digest != "" {
		return r.Name() + "@" + r.Digest.String()
	}
	return r.Name() + ":" + r.Tag
}
