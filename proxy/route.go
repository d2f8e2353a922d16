package proxy

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// endpoint is what a /v2/ path asks for.
type endpoint int

const (
	endpointBase      endpoint = iota // /v2/
	endpointManifest                  // /v2/<name>/manifests/<reference>
	endpointBlob                      // /v2/<name>/blobs/<digest>
	endpointTags                      // /v2/<name>/tags/list
	endpointUpload                    // /v2/<name>/blobs/uploads/... (pushes)
	endpointReferrers                 // /v2/<name>/referrers/<digest>
)

// The distribution reference grammar (distribution/reference/regexp.go),
// restated: lowercase alphanumeric components joined by separators, split
// by '/'. Tags are at most 128 word characters, dots and dashes.
var (
	pathComponent = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
	nameRegexp    = regexp.MustCompile(`^` + pathComponent + `(?:/` + pathComponent + `)*$`)
	tagRegexp     = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
)

// maxNameLength is distribution's limit on a full repository name.
const maxNameLength = 255

// parsedPath is a /v2/ path split into its parts; nothing in it has been
// resolved to a registry yet.
type parsedPath struct {
	endpoint endpoint
	name     string // repository name as the client sent it, maybe prefixed with a registry host
	ref      string // tag or digest for manifests, digest for blobs and referrers
}

// parsePath splits a request path by hand: a repository name may itself
// contain "manifests" or "blobs" as a component, so the endpoint is found
// from the end of the path, where the reference has no '/'.
func parsePath(path string) (parsedPath, error) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		if path == "/v2" {
			return parsedPath{endpoint: endpointBase}, nil
		}
		return parsedPath{}, errUnknownEndpoint
	}
	if rest == "" {
		return parsedPath{endpoint: endpointBase}, nil
	}
	if name, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		return parsedPath{endpoint: endpointTags, name: name}, nil
	}
	if i := strings.LastIndex(rest, "/blobs/uploads"); i > 0 {
		return parsedPath{endpoint: endpointUpload, name: rest[:i]}, nil
	}
	slash := strings.LastIndexByte(rest, '/')
	if slash <= 0 {
		return parsedPath{}, errUnknownEndpoint
	}
	ref := rest[slash+1:]
	head := rest[:slash]
	kindSlash := strings.LastIndexByte(head, '/')
	if kindSlash <= 0 {
		return parsedPath{}, errUnknownEndpoint
	}
	name, kind := head[:kindSlash], head[kindSlash+1:]
	switch kind {
	case "manifests":
		return parsedPath{endpoint: endpointManifest, name: name, ref: ref}, nil
	case "blobs":
		return parsedPath{endpoint: endpointBlob, name: name, ref: ref}, nil
	case "referrers":
		return parsedPath{endpoint: endpointReferrers, name: name, ref: ref}, nil
	}
	return parsedPath{}, errUnknownEndpoint
}

// validateName checks a repository name (without any registry prefix).
func validateName(name string) error {
	if len(name) == 0 || len(name) > maxNameLength || !nameRegexp.MatchString(name) {
		return fmt.Errorf("%w: %q", errNameInvalid, name)
	}
	return nil
}

// parseDigest accepts only what the cache can address: sha256 digests.
func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %v", errDigestInvalid, s, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("%w: %q: only sha256 digests are supported", errDigestInvalid, s)
	}
	return d, nil
}

// reference is a validated manifest reference: a tag or a digest.
type reference struct {
	tag    string
	digest digest.Digest
}

func (r reference) String() string {
	if r.digest != "" {
		return r.digest.String()
	}
	return r.tag
}

func parseReference(s string) (reference, error) {
	if strings.Contains(s, ":") {
		d, err := parseDigest(s)
		if err != nil {
			return reference{}, err
		}
		return reference{digest: d}, nil
	}
	if !tagRegexp.MatchString(s) {
		return reference{}, fmt.Errorf("%w: %q", errReferenceInvalid, s)
	}
	return reference{tag: s}, nil
}

// looksLikeRegistryHost tells whether the first component of a name is meant
// as a registry host, by the rule Docker's reference parser uses: it has a
// dot or a port, or it is "localhost".
func looksLikeRegistryHost(component string) bool {
	return strings.ContainsAny(component, ".:") || component == "localhost"
}
