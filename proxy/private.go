package proxy

import (
	"fmt"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/upstream"
)

// Private registries (Options.PrivateRegistries).
//
// The cache is content-addressed and shares blobs across repositories: for
// a public registry, whoever names a digest gets it. A private registry's
// upstream decides who sees what per repository, so the mirror must not
// turn "knows a digest" into "may read it": cached content of a private
// registry is served for a repository only when it was fetched for that
// repository (the fill or manifest fetch records a link), or when upstream
// confirms now, with a HEAD by digest in that repository, that it is there
// (the answer is recorded as a link, so it is asked once). When upstream
// cannot answer, an unlinked digest is refused, never served.

// isPrivate reports whether registry's content is scoped to repositories.
func (s *Server) isPrivate(registry string) bool {
	return s.opts.PrivateRegistries[registry]
}

// linked reports whether cached digest d may be served for rq's repository
// without asking upstream. With no private registry configured, always.
// Otherwise only when a link records d in that repository — for public
// registries too: blobs are shared by digest across registries, so a
// private layer must not come out through a public name either
// ("/v2/library/x/blobs/<private digest>"). A public repository pays one
// HEAD per blob it did not fetch itself, once.
func (s *Server) linked(rq request, d digest.Digest) bool {
	if len(s.opts.PrivateRegistries) == 0 {
		return true
	}
	ok, err := s.links.HasLink(rq.registry, rq.repo, d)
	if err != nil {
		s.log.Warn("reading repository link", "registry", rq.registry, "repo", rq.repo, "digest", d, "err", err)
	}
	return ok && err == nil
}

// confirmInRepo decides whether cached digest d (a manifest or a blob, as
// res says) may be served for rq's repository. It returns nil when it may;
// otherwise the error to answer: upstream's not found, unauthorized or
// denied, or unavailable when upstream cannot be asked (offline, down).
// Concurrent confirmations of one digest in one repository share one HEAD.
// A refusal reads exactly as the answer for a digest the mirror does not
// have, so that it does not reveal what is cached.
func (s *Server) confirmInRepo(rq request, d digest.Digest, res resource) error {
	if s.linked(rq, d) {
		return nil
	}
	if s.opts.Offline {
		// Worded as for a digest that is not cached at all: the answer must
		// not tell that someone else pulled it (the reason goes to the log).
		s.log.Info("cached content not confirmed in this repository: offline", "private", s.isPrivate(rq.registry), "registry", rq.registry, "repo", rq.repo, "digest", d)
		return fmt.Errorf("%w: %s", errOffline, d)
	}
	// The resource is in the key: a manifest's HEAD says nothing of a
	// blob of the same digest, nor the other way round.
	_, err, _ := s.flights.Do("confirm\x00"+strconv.Itoa(int(res))+"\x00"+rq.registry+"\x00"+rq.repo+"\x00"+d.String(), func() (any, error) {
		ctx, cancel := s.upstreamContext()
		defer cancel()
		var err error
		if res == resourceManifest {
			var desc upstream.Descriptor
			desc, err = rq.up.HeadManifest(ctx, rq.repo, d.String())
			if err == nil && desc.Digest != "" && desc.Digest != d {
				err = fmt.Errorf("%w: asked for %s, upstream has %s", errUpstreamCorrupt, d, desc.Digest)
			}
		} else {
			_, err = rq.up.HeadBlob(ctx, rq.repo, d)
		}
		if err != nil {
			return nil, err
		}
		if err := s.links.AddLink(rq.registry, rq.repo, d); err != nil {
			s.log.Warn("recording repository link", "registry", rq.registry, "repo", rq.repo, "digest", d, "err", err)
		}
		return nil, nil
	})
	if err != nil {
		s.log.Info("cached content not confirmed in this repository", "private", s.isPrivate(rq.registry), "registry", rq.registry, "repo", rq.repo, "digest", d, "err", err)
		// The error as upstream's for a digest not cached would be: the
		// answer must not tell that the mirror has it.
		return err
	}
	return nil
}
