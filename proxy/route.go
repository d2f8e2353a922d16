package proxy

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/regmirror/regmirror/imageref"
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

// validateName checks a repository name (without any registry prefix)
// against imageref's grammar.
func validateName(name string) error {
	if !imageref.ValidRepository(name) {
		return fmt.Errorf("%w: %q", errNameInvalid, name)
	}
	return nil
}

// parseDigest accepts only what the cache can address: sha256 digests.
// Its errors are errDigestInvalid (imageref.ErrInvalidDigest).
func parseDigest(s string) (digest.Digest, error) {
	return imageref.ParseDigest(s)
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
	if !imageref.ValidTag(s) {
		return reference{}, fmt.Errorf("%w: %q", errReferenceInvalid, s)
	}
	return reference{tag: s}, nil
}
