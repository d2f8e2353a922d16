package proxy

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"
	"github.com/regmirror/regmirror/imageref"
	"github.com/valyala/fasthttp"
)

// endpoint is what a /v2/ path asks for.
type endpoint int

const (
	endpointBase      endpoint = iota // /v2/
	endpointManifest                  // /v2/<name>/manifests/<reference>
	endpointBlob                      // /v2/<name>/blobs/<digest>
	endpointTags                      // /v2/<name>/tags/list
	endpointUpload                    // /v2/<name>/blobs/uploads[/[<session>]] (pushes)
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
	slash := strings.LastIndexByte(rest, '/')
	if slash <= 0 {
		return parsedPath{}, errUnknownEndpoint
	}
	ref := rest[slash+1:]
	head := rest[:slash]
	// An upload is <name>/blobs/uploads, or that and "/" and a session,
	// told from the end like the rest (a search for "/blobs/uploads" was
	// a tenth of a warm hit's time).
	for _, s := range [...]string{rest, head} {
		if name, ok := strings.CutSuffix(s, "/blobs/uploads"); ok && name != "" {
			return parsedPath{endpoint: endpointUpload, name: name}, nil
		}
	}
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

// request is a validated pull request resolved to one configured upstream.
type request struct {
	up       Upstream // never dialled in offline mode
	registry string
	repo     string // normalised for the upstream ("library/alpine")
	ref      reference
}

// sameRepo reports whether rq and o name the same repository of the same
// registry: content fetched for one may be shared with the other without
// asking upstream (see confirmInRepo).
func (rq request) sameRepo(o request) bool {
	return rq.registry == o.registry && rq.repo == o.repo
}

// router resolves what a request names to one of the configured upstreams.
// Only those are ever dialled: a request that names another registry, in
// any addressing form, is refused.
type router struct {
	registries map[string]Upstream // by canonical name
	defaultUp  Upstream            // a bare path's registry, looked up once
	// hostAliases maps a lowercase Host (with its port, or without) to a
	// registry name.
	hostAliases map[string]string
}

// newRouter routes to registries (by canonical name), bare paths to
// defaultRegistry, and the Host aliases (lowercase) to their registries.
// defaultRegistry must be one of registries.
func newRouter(registries map[string]Upstream, defaultRegistry string, hostAliases map[string]string) (router, error) {
	up, ok := registries[defaultRegistry]
	if !ok {
		return router{}, fmt.Errorf("proxy: default registry %q is not configured", defaultRegistry)
	}
	return router{registries: registries, defaultUp: up, hostAliases: hostAliases}, nil
}

// resolve chooses the upstream of a parsed /v2/ path, given the request's
// ?ns= query and Host header, and validates the name and reference.
func (r *router) resolve(p parsedPath, ns string, host []byte) (request, error) {
	name := p.name
	var prefix string
	if first, rest, ok := strings.Cut(name, "/"); ok && imageref.IsHost(first) {
		// With ?ns= the query names the registry; a first component is a
		// prefix only when it says the same (containerd's override_path
		// sends both), else it is part of the repository name.
		if ns == "" || imageref.CanonicalRegistry(first) == imageref.CanonicalRegistry(ns) {
			prefix, name = strings.ToLower(first), rest
		}
	}
	up, err := r.registry(ns, prefix, host)
	if err != nil {
		return request{}, err
	}
	if err := validateName(name); err != nil {
		return request{}, err
	}
	rq := request{up: up, registry: up.Name(), repo: up.Repository(name)}
	switch p.endpoint {
	case endpointManifest:
		rq.ref, err = parseReference(p.ref)
	case endpointBlob, endpointReferrers:
		var d digest.Digest
		d, err = parseDigest(p.ref)
		rq.ref = reference{digest: d}
	}
	return rq, err
}

// registry picks the upstream a request names, in the order: the ?ns=
// query (containerd), a registry host as the first path component (podman
// and containerd override_path), a Host alias, the default.
func (r *router) registry(ns, pathPrefix string, host []byte) (Upstream, error) {
	switch {
	case ns != "":
		return r.named(ns)
	case pathPrefix != "":
		return r.named(pathPrefix)
	}
	if name, ok := r.alias(host); ok {
		return r.named(name)
	}
	return r.defaultUp, nil
}

// hostOf is the request's Host as routing reads it: nil when no Host alias
// is configured (its string was a warm hit's only allocation).
func (r *router) hostOf(ctx *fasthttp.RequestCtx) []byte {
	if len(r.hostAliases) == 0 {
		return nil
	}
	return ctx.Host()
}

// alias is the registry a Host (from hostOf) names, if any. An alias may be
// written with its port or without. The Host is lowercased into a buffer
// on the stack, so that a Host alias costs a warm hit no allocation.
func (r *router) alias(hostHeader []byte) (string, bool) {
	if len(r.hostAliases) == 0 {
		return "", false
	}
	var buf [maxAliasedHost]byte
	host, ok := lowerASCII(buf[:0], hostHeader)
	if !ok { // long, or not ASCII: strings.ToLower's Unicode rules
		host = []byte(strings.ToLower(string(hostHeader)))
	}
	if name, ok := r.hostAliases[string(host)]; ok {
		return name, true
	}
	if h, ok := withoutPort(host); ok {
		host = h
	}
	name, ok := r.hostAliases[string(host)]
	return name, ok
}

// maxAliasedHost is the longest Host lowercased on the stack: a DNS name
// (253 bytes) and a port.
const maxAliasedHost = 264

// lowerASCII appends b lowercased to dst, if b is ASCII and fits dst's
// capacity.
func lowerASCII(dst, b []byte) ([]byte, bool) {
	if len(b) > cap(dst) {
		return nil, false
	}
	for _, c := range b {
		switch {
		case c >= utf8.RuneSelf:
			return nil, false
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst, true
}

// withoutPort is the host of hostport as net.SplitHostPort splits it
// ("[::1]:5000" → "::1"), and false where that errs; on bytes, as no
// string is made.
func withoutPort(hostport []byte) ([]byte, bool) {
	i := bytes.LastIndexByte(hostport, ':')
	if i < 0 {
		return nil, false
	}
	host := hostport[:i]
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	} else if bytes.IndexByte(host, ':') >= 0 {
		return nil, false
	}
	if bytes.ContainsAny(host, "[]") || bytes.ContainsAny(hostport[i+1:], "[]") {
		return nil, false
	}
	return host, true
}

// named is the configured upstream called name (any of Docker Hub's
// names means docker.io).
func (r *router) named(name string) (Upstream, error) {
	name = imageref.CanonicalRegistry(name)
	if up, ok := r.registries[name]; ok {
		return up, nil
	}
	return nil, fmt.Errorf("%w: %q", errRegistryNotAllowed, name)
}
