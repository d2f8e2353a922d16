package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Manifest media types asked for with every manifest request.
const (
	MediaTypeOCIIndex           = "application/vnd.oci.image.index.v1+json"
	MediaTypeOCIManifest        = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
)

var acceptManifests = strings.Join([]string{
	MediaTypeOCIIndex, MediaTypeOCIManifest, MediaTypeDockerManifestList, MediaTypeDockerManifest,
}, ", ")

func manifestRequest(method, repo, ref string) request {
	return request{
		method: method,
		repo:   repo,
		path:   "manifests/" + ref,
		header: http.Header{"Accept": {acceptManifests}},
	}
}

// HeadManifest asks for repo:ref's descriptor without its body (HEAD does
// not count against Docker Hub's pull limit). The digest comes from
// Docker-Content-Digest, validated (and checked against ref if ref is a
// digest); a registry that omits it is asked with a GET instead.
func (r *Registry) HeadManifest(ctx context.Context, repo, ref string) (Descriptor, error) {
	repo, err := r.checkRepo(repo)
	if err != nil {
		return Descriptor{}, err
	}
	refDigest, err := checkRef(ref)
	if err != nil {
		return Descriptor{}, err
	}
	resp, err := r.do(ctx, manifestRequest(http.MethodHead, repo, ref))
	if err != nil {
		return Descriptor{}, err
	}
	defer drain(resp)
	if err := r.checkResponse(resp, http.StatusOK); err != nil {
		return Descriptor{}, err
	}
	hd := resp.Header.Get("Docker-Content-Digest")
	if hd == "" {
		if refDigest == "" {
			r.log.Debug("upstream HEAD without Docker-Content-Digest; using GET", "repo", repo, "ref", ref)
			_, desc, err := r.GetManifest(ctx, repo, ref)
			return desc, err
		}
		hd = refDigest.String()
	}
	d, err := digest.Parse(hd)
	if err != nil {
		return Descriptor{}, fmt.Errorf("%w: HEAD %s:%s: bad Docker-Content-Digest %q", ErrUnavailable, repo, ref, hd)
	}
	if refDigest != "" && d != refDigest {
		return Descriptor{}, fmt.Errorf("%w: HEAD %s@%s: digest mismatch: upstream says %s", ErrUnavailable, repo, ref, d)
	}
	size := int64(-1)
	if n, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64); err == nil && n >= 0 {
		size = n
	}
	return Descriptor{Digest: d, MediaType: mediaType(resp.Header.Get("Content-Type"), nil), Size: size}, nil
}

// GetManifest fetches repo:ref's manifest, reading at most MaxManifestSize
// bytes (ErrTooLarge beyond). The descriptor's digest is computed over the
// body received (sha256, or ref's algorithm if ref is a digest), never taken
// from the headers; if ref is a digest and the body does not match it, the
// error wraps ErrUnavailable. The body must be a manifest of a known media
// type that agrees with Content-Type (see validateManifest; ErrInvalidManifest
// otherwise); the descriptor's media type is the one validated.
func (r *Registry) GetManifest(ctx context.Context, repo, ref string) ([]byte, Descriptor, error) {
	repo, err := r.checkRepo(repo)
	if err != nil {
		return nil, Descriptor{}, err
	}
	refDigest, err := checkRef(ref)
	if err != nil {
		return nil, Descriptor{}, err
	}
	what := "GET " + repo + ":" + ref
	body, hdr, err := r.getSmall(ctx, manifestRequest(http.MethodGet, repo, ref), r.opts.MaxManifestSize, what)
	if err != nil {
		return nil, Descriptor{}, err
	}
	alg := digest.Canonical
	if refDigest != "" {
		alg = refDigest.Algorithm()
	}
	d := alg.FromBytes(body)
	if refDigest != "" && d != refDigest {
		return nil, Descriptor{}, fmt.Errorf("%w: %s: digest mismatch: body is %s", ErrUnavailable, what, d)
	}
	if hd := hdr.Get("Docker-Content-Digest"); hd != "" && hd != d.String() {
		r.log.Warn("upstream Docker-Content-Digest differs from the body's digest", "what", what, "header", hd, "body", d)
	}
	mt, err := validateManifest(hdr.Get("Content-Type"), body)
	if err != nil {
		r.log.Warn("upstream sent an invalid manifest; refused", "what", what, "content_type", hdr.Get("Content-Type"), "size", len(body), "err", err)
		return nil, Descriptor{}, fmt.Errorf("%s: %w", what, err)
	}
	return body, Descriptor{Digest: d, MediaType: mt, Size: int64(len(body))}, nil
}

// TagPage is one page of a repository's tag list: the body as upstream
// sent it and, when upstream says there is a next page (a Link header with
// rel="next"), that page's query: its n and last, and nothing else, for
// the mirror to offer under its own path (a Link's URL is never followed).
type TagPage struct {
	Body []byte
	Next url.Values // nil: the last page
}

// ListTags returns GET /v2/<repo>/tags/list?<rawQuery> (the query, e.g.
// "n=100&last=x", is re-encoded), its body capped at 4 MiB (ErrTooLarge).
func (r *Registry) ListTags(ctx context.Context, repo, rawQuery string) (TagPage, error) {
	repo, err := r.checkRepo(repo)
	if err != nil {
		return TagPage{}, err
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return TagPage{}, fmt.Errorf("%w: tags query %q: %v", ErrInvalidName, rawQuery, err)
	}
	req := request{method: http.MethodGet, repo: repo, path: "tags/list", query: q.Encode(),
		header: http.Header{"Accept": {"application/json"}}}
	body, hdr, err := r.getSmall(ctx, req, maxTagListSize, "GET tags of "+repo)
	if err != nil {
		return TagPage{}, err
	}
	return TagPage{Body: body, Next: nextTagPage(hdr.Values("Link"))}, nil
}

// nextTagPage is the n and last of the rel="next" link among links
// (RFC 8288: "<url>; rel=next", several per header or in several
// headers), or nil when there is none or it names no last.
func nextTagPage(links []string) url.Values {
	for _, header := range links {
		for _, link := range strings.Split(header, ",") {
			target, params, ok := strings.Cut(link, ";")
			target = strings.TrimSpace(target)
			if !ok || !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") || !relNext(params) {
				continue
			}
			u, err := url.Parse(target[1 : len(target)-1])
			if err != nil || u.Query().Get("last") == "" {
				continue
			}
			next := url.Values{"last": {u.Query().Get("last")}}
			if n := u.Query().Get("n"); n != "" {
				next.Set("n", n)
			}
			return next
		}
	}
	return nil
}

// relNext reports whether a link's parameters have rel="next" (the rel
// may list several types).
func relNext(params string) bool {
	for _, p := range strings.Split(params, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "rel") && slices.Contains(strings.Fields(strings.ToLower(strings.Trim(strings.TrimSpace(v), `"`))), "next") {
			return true
		}
	}
	return false
}

// getSmall does req and reads its 200 body whole, up to max bytes.
func (r *Registry) getSmall(ctx context.Context, req request, max int64, what string) ([]byte, http.Header, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	resp, err := r.do(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if err := r.checkResponse(resp, http.StatusOK); err != nil {
		return nil, nil, err
	}
	if resp.ContentLength > max {
		return nil, nil, fmt.Errorf("%w: %s: %d bytes (limit %d)", ErrTooLarge, what, resp.ContentLength, max)
	}
	body, err := io.ReadAll(io.LimitReader(r.guard(ctx, cancel, resp.Body, what), max+1))
	if err != nil {
		return nil, nil, err
	}
	if int64(len(body)) > max {
		return nil, nil, fmt.Errorf("%w: %s: over %d bytes", ErrTooLarge, what, max)
	}
	return body, resp.Header, nil
}

// mediaType is Content-Type without parameters, or, when that is missing or
// generic, the mediaType field of body (if given).
func mediaType(contentType string, body []byte) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = ""
	}
	switch mt {
	case "", "application/json", "text/plain", "application/octet-stream":
		if body != nil {
			var m struct {
				MediaType string `json:"mediaType"`
			}
			if json.Unmarshal(body, &m) == nil && m.MediaType != "" {
				return m.MediaType
			}
		}
	}
	return mt
}
