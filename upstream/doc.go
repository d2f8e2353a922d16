// Package upstream talks to the remote registries regmirror mirrors.
//
// One Registry per configured upstream holds one long-lived http.Client
// (connection reuse, DialTimeout, TLS from CAFile / InsecureSkipVerify) and
// the authentication state: the /v2/ challenge from go-containerregistry's
// transport.Ping (cached; dropped after an authentication error so the next
// request pings again), and bearer tokens from transport.Exchange, one per
// scope ("repository:<repo>:pull"), cached until shortly before they expire
// in a bounded LRU (1024 scopes). A 401 during use re-exchanges the token once
// and retries. Basic challenges and registries without auth work too.
//
// Repository names get Docker Hub defaulting ("alpine" → "library/alpine")
// when the registry is docker.io; every method applies it, so callers may
// pass either form. Names, references and digests are validated before any
// request is built.
//
// Every request asks for manifests with the full Accept set (OCI index and
// manifest, Docker manifest list and schema2). Idempotent requests are
// retried on connection errors and 5xx (Retries times, exponential backoff
// with jitter from RetryBackoff); 4xx and 429 are not retried.
//
// Upstreams are hostile until proven otherwise (guard.go). Every
// connection goes through one dialer whose net.Dialer.Control refuses
// loopback, link-local, private and other special-purpose addresses
// (code.dny.dev/ssrf's lists), checked on the resolved address so DNS
// rebinding cannot bypass it, except the registry's own endpoint (the
// address its URL names, or what its name resolved to on first use, on its
// port), Options.AllowPrivateAddresses and the environment's proxy. Every
// request URL is checked too (literal internal addresses and localhost),
// which still holds behind a proxy. Redirects: http(s) only, never from
// https to http, at most 5 hops, and Authorization dropped when scheme,
// host or port changes. A token realm must be https (or http for an http
// registry), gets credentials on another host only over https, and passes
// the same guard. GetManifest accepts only manifests of the four known
// media types that agree with Content-Type (validate.go). Refusals are
// ErrRefused, bad manifests ErrInvalidManifest; both wrap ErrUnavailable and
// are never retried. ClientReason gives the short text a client may see;
// error messages themselves may hold upstream bodies and URLs (for logs).
//
// Errors are classified, from the status and the registry error body (read
// with a 64 KiB cap), into the sentinels ErrNotFound, ErrUnauthorized,
// ErrDenied, ErrRateLimited (as *RateLimitError with Retry-After),
// ErrUnavailable and ErrTooLarge, plus ErrInvalidName for arguments rejected
// before any I/O. Anything else that goes wrong upstream (other statuses,
// malformed answers, digest mismatches, cut or stalled bodies) is
// ErrUnavailable. A cancelled caller context surfaces as the context's error.
// The errors also wrap the underlying cause (e.g. *transport.Error), so
// their messages say what the upstream answered.
//
// The package imports go-containerregistry's client packages, go-digest
// and code.dny.dev/ssrf, and no other project package (see
// imports_test.go).
package upstream
