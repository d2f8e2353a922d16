// Package imageref is regmirror's one home for image names: parsing a
// reference (name[:tag][@digest]), Docker Hub's defaulting and aliases, the
// repository and tag grammar, and the digest rule (sha256 only, because
// every cached file is named by a sha256 hex digest).
//
// Every other package takes its typed values or asks its predicates instead
// of keeping its own copy of a rule:
//
//   - Parse reads what a user writes ("alpine", "ghcr.io/org/app:v1",
//     "registry.corp:5000/team/app@sha256:…") into a Ref with Docker's
//     defaulting: no registry means docker.io, a single-component name on
//     Docker Hub gets "library/", no tag means "latest".
//   - CanonicalRegistry maps the names clients use for Docker Hub
//     (docker.io, index.docker.io, registry-1.docker.io,
//     registry.hub.docker.com) to "docker.io" and lowercases any other host;
//     IsDockerHub and DefaultRepository build on it.
//   - ValidRepository and ValidTag are the distribution spec's grammar
//     (lowercase path components joined by '.', '_', "__" or dashes; tags of
//     at most 128 word characters, dots and dashes). It is stricter than
//     go-containerregistry's pkg/name, which accepts "a..b" or "-a": a name
//     the proxy would refuse must not be pinnable or preloadable either.
//   - CheckDigest and ParseDigest accept sha256 digests only; other
//     algorithms fail with ErrUnsupportedDigest (which is also an
//     ErrInvalidDigest).
//
// The package imports only go-digest, so that leaf packages (cache,
// archive) may use it without taking on a registry client.
package imageref
