// Package airgap moves images into, out of and between mirrors: preload
// (fetch images through a regmirror and pin them), export (write cached
// images to an OCI image layout archive), import (read such an archive
// into a cache, all or nothing) and push-to (copy cached images into a
// site registry, digests preserved).
//
// Preload never talks to an upstream registry itself: it pulls through a
// regmirror server (one started on loopback for the command, the one that
// holds the data dir, or one on another box), with upstream's registry
// client pointed at that server, so that every byte it stores went through
// the proxy's verified fill path (one fill per digest, digest checked,
// tag records and repository links written). Each image is pinned, under
// its full reference, with exactly the digests it read; while it
// downloads it is pinned piece by piece, and an image that did not arrive
// whole is unpinned again.
//
// Export plans against the cache's catalogue (admin.Ops.Images) and
// streams from an archive.BlobSource (the cache directly, or the running
// server's cache-only blob endpoint), writing to a temporary file that is
// renamed into place only when the archive is complete.
//
// Import reads through archive.Read into an [ImportStore] (the cache's own
// writer, which verifies every blob again) and records tags, repository
// links and pins only after every image's graph has been checked. A
// refused archive, or a failure while recording, rolls back what this
// import added: blobs, tags and pins, so the cache is left as it was.
//
// Push-to reads cached images like export and writes them with upstream's
// Pusher: blobs first, then child manifests by digest, then the top-level
// manifest under its tag, each byte-for-byte as cached, so the site
// registry serves the same digests.
//
// The package owns small interfaces for what it needs (Pinner, Catalog,
// ImportStore, Progress); package main wires them to admin, cache and its
// progress bars. It imports no HTTP server, no Badger and no registry
// client library of its own (imports_test.go).
package airgap
