// Package proxy is regmirror's HTTP front end and its pull-through policy.
//
// It owns:
//   - the fasthttp server and the registry API for pulls (GET and HEAD of
//     /v2/, manifests, blobs and tags/list); pushes and deletes answer
//     405 UNSUPPORTED;
//   - parsing /v2/ paths by hand (repository names contain '/') and
//     validating names, references and digests before anything else sees
//     them;
//   - choosing the upstream a request names (?ns=, a registry host as the
//     first path component, a Host alias, else the default registry), and
//     refusing every registry that is not configured;
//   - the pull-through policy: digests are served from the cache and never
//     expire; tags are served from the cache while younger than the tag TTL,
//     then revalidated with a HEAD, and served stale when upstream is down
//     or rate limited; a missing blob is fetched once (a fill) and streamed
//     to every waiting client while it downloads;
//   - turning errors into registry wire codes: this is the only package that
//     knows them (see errors.go).
//
// Where things live: route.go parses /v2/ paths and resolves them (router)
// to one configured upstream; handlers (blobs.go, manifests.go, tags.go,
// referrers.go, operator.go) return a reply or an error and never write
// the response: finish (reply.go) is the one step that does, errors through
// writeError and toWire. How the cache answered is an Outcome (outcome.go),
// sent in the X-Regmirror-Cache header. The cache is used through small
// interfaces, one per job (store.go). Under the handlers: listener.go caps
// connections and outlives descriptor exhaustion, deadlines.go hands
// fasthttp's timeouts to each connection lazily, and headers.go holds what
// every answer writes, prepared once, and the interned strings a request
// brings (path, client, user agent), so that a warm request allocates
// nothing.
//
// The fill (fill.go) is the heart: one upstream GET per digest at a time,
// detached from every client's lifetime, written to a temp file through the
// cache's hashing writer. Every client follows the growing temp file, and
// the final byte is held back from all of them until the digest has been
// verified, so no client ever receives a complete body that is wrong.
package proxy
