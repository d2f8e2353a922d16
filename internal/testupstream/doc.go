// Package testupstream is the fake upstream registry every regmirror test
// pulls from: go-containerregistry's pkg/registry behind a bearer-token
// server that behaves like Docker Hub's, with request counters, fault
// switches and hostile modes (hostile.go: redirects to a canary listener,
// foreign token realms, bodies that are not manifests, blob redirects to a
// CDN). The token server answers /token on the registry's own listener:
// regmirror's address guard lets a registry's connections reach only its
// own loopback address and port, and sends no credentials over http to a
// realm on another host.
//
// Start one per test:
//
//	up := testupstream.Start(t)
//	img := up.PushRandomImage(t, "library/alpine", "3.20", 2, 1024)
//	up.SetStatus(http.StatusServiceUnavailable, "")  // every registry request now fails
//	n := up.ManifestRequests(http.MethodGet)
//
// Authentication: every /v2/ request needs a bearer token that grants pull
// (GET, HEAD) or push (other methods) on the repository named in its path;
// otherwise it is answered 401 with a WWW-Authenticate challenge naming the
// realm (http://<Host>/token: the registry's own address and port as the
// request named it, which go-containerregistry's realm check accepts, or a
// reverse proxy's in front of it), the service
// ("test-registry") and the needed scope. WithCredentials makes the token
// server demand basic auth; WithBasicChallenge and WithNoAuth switch the
// registry to a Basic challenge or to no authentication at all.
//
// Counters count every registry request except those answered with a 401
// challenge (so a client's token dance does not inflate "fetched once"
// assertions); requests dropped by SetDown or failed by SetStatus count.
//
// Order in which a registry request meets the faults: latency, down,
// authentication, counting, status, hostile answers, then (blob GETs only) gate, cut and
// corruption while the body is written.
//
// Blob GETs are served by this package, not by pkg/registry, so that they
// support single-range requests ("bytes=a-", "bytes=a-b", "bytes=-n"; 206 with
// Content-Range) and the body faults. Blobs live on disk under the test's
// temp directory, so a 1 GiB layer costs no memory.
package testupstream
