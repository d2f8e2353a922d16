// Package admin is the management side of a mirror: usage figures, eviction
// on demand, image pins and the list of cached images.
//
// The same operations (Ops) are offered two ways, so that a command works
// whether or not a server holds the data dir: Local runs them against an
// open cache and evictor; Client asks a running server over HTTP, where
// Handler answers them under /_regmirror/ (the proxy mounts it for loopback
// clients only).
//
// Pins protect whole images from eviction. A pin is named by the image's
// full reference ("docker.io/library/alpine:3.20") and lists every digest of
// the image graph that was cached when it was pinned: index, manifests,
// configs and layers. A digest stays pinned while any pin lists it.
package admin
