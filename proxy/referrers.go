package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
	"github.com/valyala/fasthttp"

	"github.com/regmirror/regmirror/upstream"
)

// Referrers (GET /v2/<name>/referrers/<digest>, OCI distribution 1.1) are
// passed through to upstream, unfiltered, and the last answer per cached
// subject is kept in the cache's referrers record (not a blob, so eviction
// does not see it). While upstream is down, or the mirror offline, that
// answer is served. An artifactType query is applied here, to the cached
// or fetched answer, and announced with OCI-Filters-Applied, so one record
// serves every filter. Upstream's 404 (no referrers API) is passed on;
// clients then fall back to the referrers tag schema, which is an ordinary
// tag to the mirror.

// referrersUpstream is the optional Upstream method the pass-through needs.
type referrersUpstream interface {
	Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]byte, upstream.Descriptor, error)
}

const mediaTypeOCIIndex = "application/vnd.oci.image.index.v1+json"

func (s *Server) serveReferrers(ctx *fasthttp.RequestCtx, ex *exchange, rq request) (reply, error) {
	d := rq.ref.digest
	ru, ok := rq.up.(referrersUpstream)
	if !ok && !s.opts.Offline {
		return reply{}, fmt.Errorf("%w: the referrers API is not mirrored for %s", errUnknownEndpoint, rq.registry)
	}
	kept := keptRecord{
		load: func() ([]byte, error) { return s.answers.Referrers(rq.registry, rq.repo, d) },
		save: func(body []byte) error {
			// Kept only for a subject the cache holds: any client may
			// ask about any of 2^256 digests, and a record for each
			// would grow the index without bound, outside the budget.
			if _, err := s.blobs.Stat(d); err != nil {
				return nil
			}
			return s.answers.SetReferrers(rq.registry, rq.repo, d, body)
		},
	}
	body, outcome, err := s.keptAnswer(rq, rq.repo+"@"+d.String(), "referrers", kept, true,
		func(uctx context.Context) ([]byte, error) {
			body, _, err := ru.Referrers(uctx, rq.repo, d, "")
			return body, err
		})
	ex.outcome = outcome
	if errors.Is(err, upstream.ErrBadRequest) {
		// An upstream without the API may refuse it (400, 405) instead
		// of a 404: either way clients fall back to the tag schema.
		return reply{}, fmt.Errorf("%w: %s has no referrers API (%w)", errUnknownEndpoint, rq.registry, err)
	}
	if err != nil {
		return reply{}, err
	}
	if at := ctx.QueryArgs().Peek("artifactType"); len(at) > 0 {
		filtered, ferr := filterReferrers(body, string(at))
		if ferr != nil {
			return reply{}, fmt.Errorf("%w: referrers index: %v", errUpstreamCorrupt, ferr)
		}
		body = filtered
		ctx.Response.Header.Set("OCI-Filters-Applied", "artifactType")
	}
	return bodyReply(mediaTypeOCIIndex, body), nil
}

// filterReferrers keeps the descriptors of a referrers index whose
// artifactType is artifactType; each kept descriptor is copied verbatim.
func filterReferrers(body []byte, artifactType string) ([]byte, error) {
	var idx struct {
		Manifests []json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(body, &idx); err != nil {
		return nil, err
	}
	out := struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		Manifests     []json.RawMessage `json:"manifests"`
	}{SchemaVersion: 2, MediaType: mediaTypeOCIIndex, Manifests: []json.RawMessage{}}
	for _, m := range idx.Manifests {
		var desc struct {
			ArtifactType string `json:"artifactType"`
		}
		if json.Unmarshal(m, &desc) == nil && desc.ArtifactType == artifactType {
			out.Manifests = append(out.Manifests, m)
		}
	}
	return json.Marshal(out)
}
