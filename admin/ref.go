package admin

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
)

// Ref is an image reference as regmirror keys it: the registry as clients
// name it ("docker.io"), the repository with Docker Hub defaulting applied
// ("library/alpine"), and a tag or a digest.
type Ref struct {
	Registry string
	Repo     string
	Tag      string
	Digest   digest.Digest
}

// dockerHub is what go-containerregistry calls Docker Hub and regmirror
// calls docker.io.
const dockerHub = "docker.io"

// ParseRef reads "alpine", "alpine:3.20", "docker.io/library/alpine@sha256:…"
// or "ghcr.io/org/app:v1" with Docker's defaulting rules (no registry means
// docker.io, no tag means latest). A reference with both a tag and a digest
// keeps the digest.
func ParseRef(s string) (Ref, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Ref{}, fmt.Errorf("%w: empty", ErrInvalidRef)
	}
	tagged := ""
	if at := strings.LastIndexByte(s, '@'); at >= 0 {
		// name.ParseReference refuses tag+digest; keep the digest.
		if colon := strings.LastIndexByte(s[:at], ':'); colon > strings.LastIndexByte(s[:at], '/') {
			tagged = s[colon+1 : at]
			s = s[:colon] + s[at:]
		}
	}
	r, err := name.ParseReference(s, name.WithDefaultRegistry(name.DefaultRegistry))
	if err != nil {
		return Ref{}, fmt.Errorf("%w: %q: %v", ErrInvalidRef, s, err)
	}
	out := Ref{Registry: r.Context().RegistryStr(), Repo: r.Context().RepositoryStr()}
	if out.Registry == name.DefaultRegistry {
		out.Registry = dockerHub
	}
	switch v := r.(type) {
	case name.Digest:
		d, err := digest.Parse(v.DigestStr())
		if err != nil || d.Algorithm() != digest.SHA256 {
			return Ref{}, fmt.Errorf("%w: %q: only sha256 digests", ErrInvalidRef, s)
		}
		out.Digest = d
		out.Tag = tagged
	case name.Tag:
		out.Tag = v.TagStr()
	}
	return out, nil
}

// String is the full reference: registry/repo:tag, or registry/repo@digest.
func (r Ref) String() string {
	if r.Digest != "" {
		return r.Registry + "/" + r.Repo + "@" + r.Digest.String()
	}
	return r.Registry + "/" + r.Repo + ":" + r.Tag
}
