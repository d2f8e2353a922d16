// Package s3tier is the shared second tier (L2) of several regmirror nodes:
// an S3-compatible bucket that holds verified content by digest and the
// tags the nodes have resolved, so that a blob any node has verified is
// fetched from upstream once for all of them. minio-go stays in this
// package.
//
// # Object layout (under Options.Prefix, e.g. "site-a/")
//
//	blobs/sha256/<ab>/<hex>          a layer, config or manifest, exactly the
//	                                 bytes of that digest; its media type in
//	                                 the object's metadata (x-amz-meta-media-type)
//	tags/<registry>/<repo>/<tag>     a tag record, JSON:
//	                                 {"digest","mediaType","size","checkedAt"}
//
// Only content a node has verified is written: an object is uploaded from a
// committed L1 file (the cache checked its digest), never from a body in
// flight, and hashed again as it is read: a file damaged on disk since its
// commit is not uploaded (a multipart upload is aborted, not completed) and
// the cache drops it. The PUT carries If-None-Match: * so an object is written once; a
// 412 means another node has it already, and counts as success. A tag record
// is rewritten only by a check newer than the one it holds (the newer
// checked-at wins; two nodes writing within the same instant may race, and
// either answer is one upstream gave).
//
// # Reading (Source, a decorator of the proxy's upstream)
//
// A blob or manifest by digest is asked of L2 first, then of the next source
// (the owner peer, then upstream). A blob body from L2 goes through the
// proxy's fill like any upstream body (hashing writer, last byte held back,
// so no client receives wrong content whole). It is hashed there only: a
// fill that read the body whole from offset 0 and finds it is not its
// digest calls the blob's Refute, which deletes the object, so the next
// fill goes upstream.
// A cut body resumes (GetBlob with an offset, a ranged GET) from whichever
// source answers first. A tag is answered from its record while the record is
// younger than TagTTL, else by the next source (which refreshes the record),
// else, when that source is unavailable, from the record whatever its age.
//
// # Outages
//
// Every request to the store waits at most Options.Timeout for an answer's
// headers, and a blob body's read at most Options.StallTimeout for bytes
// (then it fails with ErrUnavailable and the fill resumes from the next
// source). A store that fails (connection error, timeout, stall, 5xx) opens a
// breaker: reads skip L2 for Options.Backoff, so misses go straight to the
// next source and cache hits, which never touch L2, are not slowed. Uploads
// wait in a bounded queue and drain when the store answers again; each
// queued blob holds its L1 file against eviction until it is uploaded (or
// dropped when the queue is full). L1 eviction never deletes from the
// bucket: the bucket is bounded by its lifecycle rules, or by GC (regmirror
// gc --s3 --older-than).
//
// The upload queue is memory, but each queued blob is also remembered on
// disk (Options.PendingDir, pending.go) until its upload is over: blobs
// committed and not yet uploaded when the process stops are uploaded after
// the next start, if still in L1. Tag records are not remembered.
package s3tier
