// Package archive reads and writes OCI image layout archives: the tar files
// of `regmirror export` and `regmirror import`. Read also takes the
// archives of `skopeo copy ... oci-archive:site.tar:<ref>` and a tarred
// go-containerregistry/crane layout; go-containerregistry reads every
// image Write writes, skopeo only those with OCI media types (below).
//
// The package is the format layer only. It knows nothing of the cache: it
// reads content through [BlobSource] and stores content through [BlobSink],
// two small interfaces it owns and main wires to the cache. It imports the
// standard library, go-digest and go-containerregistry's pkg/v1 types (for
// JSON shapes) and nothing else (imports_test.go asserts this).
//
// # Archive shape
//
// [Write] emits, in this order:
//
//	blobs/                      directory entries
//	blobs/sha256/
//	blobs/sha256/<hex>          every blob of every image, each exactly once
//	oci-layout                  {"imageLayoutVersion":"1.0.0"}
//	index.json                  one entry per image, annotated with
//	                            org.opencontainers.image.ref.name = Image.Ref
//
// skopeo (containers/image, at least up to v5.x) looks a reference up only
// among index.json entries with OCI media types: an image whose top-level
// manifest is Docker schema 2 or a Docker manifest list is in the archive,
// and crane, go-containerregistry and Read find it, but
// `skopeo ... oci-archive:site.tar:<ref>` reports "no descriptor found".
// Write cannot relabel it without changing its digest.
//
// index.json comes last on purpose: an archive cut short has no index and
// is rejected as a whole. Tar headers carry a fixed modification time (the
// Unix epoch) and mode, so the same images give the same bytes.
//
// [Read] accepts these entries in any order, optionally with a leading "./",
// inside an optionally gzip-compressed stream (detected by magic bytes). It
// also accepts the OCI layout written by `docker save` since Docker 25 (the
// legacy manifest.json, repositories and <id>/ entries beside it are
// ignored). An older `docker save` tarball (manifest.json without
// index.json) is rejected with [ErrUnsupported]; convert it first with
// `skopeo copy docker-archive:in.tar oci-archive:out.tar:<ref>`.
//
// # Image graphs
//
// [Walk] visits an image's descriptors: an OCI index or Docker manifest
// list leads to its child manifests; an OCI or Docker schema 2 manifest
// leads to its config and layers (a "subject" is ignored). Manifests are
// read in full, capped at 4 MiB, and verified against their digest; no other
// blob is ever read by Walk. A manifest-level media type Walk does not know
// (Docker schema 1 included) is an [ErrUnsupported] error. Non-distributable
// (foreign) layers ([Foreign]) are written and imported when present and
// skipped silently when absent.
//
// A mirror often holds only some platforms of an index. [Image.Partial]
// lets Write export such an index with the children the source has; its
// index.json entry then carries [AnnotationPartial], and Read accepts
// exactly such entries with children missing (counted in
// ImportedImage.MissingChildren). Everything else stays strict.
//
// # Memory
//
// Blobs are streamed with fixed-size buffers: memory does not grow with blob
// size. Manifests, index.json and oci-layout are read in full with a 4 MiB
// cap; during Read a blob of at most 4 MiB whose media type is not yet known
// is buffered so a manifest's own mediaType field can be passed to
// [BlobSink.Put].
//
// # Errors
//
// Failures wrap one of three sentinels with the entry name, digest and
// expected versus actual values: [ErrCorrupt] (bad names, digest or size
// mismatch, truncated or unparsable data), [ErrIncomplete] (a blob or
// manifest that an image needs is missing) and [ErrUnsupported] (formats and
// algorithms this package does not handle). A source or sink signals that it
// lacks a blob with an error for which errors.Is(err, fs.ErrNotExist) holds;
// any other error from it is passed through, wrapped.
package archive
