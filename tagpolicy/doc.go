// Package tagpolicy decides how fresh a cached tag must be: ordered rules
// over "registry/repository:tag" globs, first match wins, no match falls
// back to the global tag_ttl.
//
// A rule says one of:
//   - immutable: the tag never moves; once cached it is never revalidated.
//   - ttl: revalidate (HEAD upstream) once the tag is older than ttl; "0s"
//     revalidates on every request. Without ttl the global tag_ttl applies.
//   - stale_while_revalidate: an expired tag is answered from the cache at
//     once and revalidated in the background.
//
// # Glob language
//
// A pattern is "NAME[:TAG]". NAME is matched against "registry/repository"
// (registry as clients name it, "docker.io"; repository with Docker Hub
// defaulting applied, "library/alpine") one '/'-separated component at a
// time with path.Match semantics ('*' and '?' within a component, '[...]'
// classes, '\' escapes), except that a component that is exactly "**"
// matches any number of components, none included. TAG is matched against
// the whole tag with path.Match; it defaults to "*" (every tag). The tag
// separator is the last ':' after the last '/', so "registry.corp:5000/**"
// names a port and every tag; a bare registry with a port needs a path:
// write "registry.corp:5000/**", not "registry.corp:5000".
//
// This matcher stays a leaf with no project imports, so that the proxy,
// the watch list and the "policy explain" command read one decision. (The
// access package has its own matcher for "registry/repository" globs;
// the two should become one when both are in place.)
package tagpolicy
