package upstream

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"
)

// Referrers fetches the OCI referrers index of repo@d
// (GET /v2/<repo>/referrers/<digest>, OCI distribution 1.1), filtered by
// artifactType when it is not empty. The body is capped at MaxManifestSize
// (ErrTooLarge beyond). A registry without the referrers API, like a
// subject with no referrers on some registries, answers 404: ErrNotFound.
// The descriptor's digest is computed over the body received; the body must
// be an image index (ErrInvalidManifest otherwise).
func (r *Registry) Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]byte, Descriptor, error) {
	repo, err := r.checkRepo(repo)
	if err != nil {
		return nil, Descriptor{}, err
	}
	if err := d.Validate(); err != nil {
		return nil, Descriptor{}, fmt.Errorf("%w: digest %q: %v", ErrInvalidName, d, err)
	}
	q := url.Values{}
	if artifactType != "" {
		q.Set("artifactType", artifactType)
	}
	req := request{method: http.MethodGet, repo: repo, path: "referrers/" + d.String(), query: q.Encode(),
		header: http.Header{"Accept": {MediaTypeOCIIndex}}}
	body, hdr, err := r.getSmall(ctx, req, r.opts.MaxManifestSize, "GET referrers of "+repo+"@"+d.String())
	if err != nil {
		return nil, Descriptor{}, err
	}
	mt, err := validateManifest(hdr.Get("Content-Type"), body)
	if err == nil && knownManifestTypes[mt] != kindIndex {
		err = invalidManifest("referrers answer is a %s, not an index", mt)
	}
	if err != nil {
		r.log.Warn("upstream sent an invalid referrers index; refused", "repo", repo, "digest", d, "err", err)
		return nil, Descriptor{}, err
	}
	return body, Descriptor{Digest: digest.FromBytes(body), MediaType: mt, Size: int64(len(body))}, nil
}
