// Package cache is regmirror's durable, verified, content-addressed store.
//
// It owns everything under the data directory: blob files (layers, configs
// and manifests alike, named by their sha256 digest), the downloads in
// progress, and a Badger index holding per-blob metadata, tag records,
// repository links and the last tags/list answer per repository. It knows
// nothing of HTTP, upstream registries or eviction policy: the proxy fills
// it, eviction deletes from it through Delete, and any number of consumers
// (eviction, an upload queue, an in-memory metadata cache) learn about
// changes through the Observer each subscribes with Store.Subscribe. The
// Store owns that list; nothing is wired back into it from outside.
//
// # The API, by job
//
//   - Blobs (blobs.go, writer.go, verify.go): Stat, Open, ReadAll, Put,
//     Create (a Writer: Write, OpenReader, Commit, Cancel), Touch, Delete,
//     SetMediaType, Walk, Usage, OpenVerified.
//   - Records (tags.go, records.go, referrers.go, purge.go): tags (Tag,
//     SetTag, DeleteTag, Tags), links (AddLink, HasLink, DeleteLink, Links),
//     kept answers (TagList, SetTagList, DeleteTagList; Referrers,
//     SetReferrers), pins (SetPin, DeletePin, Pins), Repositories.
//   - The store itself (open.go, observe.go, verify.go): Open, Close,
//     Subscribe, Check, VerifyAll, VerifyStats, Dir.
//
// Consumers take the part they use through interfaces they own (proxy's
// blob, manifest, tag, link and answer stores; admin's); every method above
// has a consumer outside this package (Touch: the proxy's in-memory
// metadata cache, which records a hit it answered without Open).
//
// # On disk
//
//	data_dir/
//	  blobs/sha256/ab/abcdef…   verified content, named by digest
//	  tmp/                      downloads in progress (same filesystem, so rename is atomic)
//	  index/                    Badger
//
// The data dir and everything in it are private to regmirror's user:
// directories 0700, files 0600. Open tightens an existing dir that is
// looser (logged) and narrows the process umask to 077, since Badger
// creates its files 0666 with no option to change it.
//
// Blob paths are built only from a digest that passed validation (algorithm
// sha256, 64 lowercase hex characters); no other text ever reaches a path.
// The data directory itself is locked with flock(2) for as long as the Store
// is open, so a second process cannot wipe tmp/ or race the reconcile;
// Badger's own lock on index/ is a second line of defence. Both surface as
// ErrBusy.
//
// # Index layout
//
// Keys start with one record-type byte, and parts are separated by 0x00,
// which is rejected in every caller-supplied part (ErrInvalidKey), so that
// repository "repo" can never collide with "repo-other" nor tag "a" of
// "x/y" with anything in repository "x". Empty parts are rejected too.
//
//	b 0x00 sha256:<hex>                          blob
//	t 0x00 <registry> 0x00 <repo> 0x00 <tag>     tag
//	l 0x00 <registry> 0x00 <repo> 0x00 <digest>  link: the blob was seen in that repository
//	T 0x00 <registry> 0x00 <repo>                last tags/list answer body (at most MaxTagListSize bytes)
//	R 0x00 <registry> 0x00 <repo> 0x00 <digest>  last referrers answer (an OCI image index, at most
//	                                             MaxReferrersSize bytes) for the subject <digest>
//	p 0x00 <name>                                pin: an image ("docker.io/library/alpine:3.20") and
//	                                             every digest of its graph; eviction spares them
//
// Every value starts with a version byte (currently 1); numbers are
// big-endian, times are int64 Unix nanoseconds (0 = zero time):
//
//	blob:    ver | size int64 | created int64 | last access int64 | flags uint8 (reserved, 0) | media type (rest)
//	tag:     ver | checked-at int64 | digest length uint8 | digest | media type (rest)
//	link:    ver
//	taglist: ver | body (rest)
//	referrers: ver | body (rest)
//	pin:     ver | digest (0x00 digest)*
//
// Versions before the R record kept referrers answers in the tag-list record
// of a pseudo-repository, T 0x00 <registry> 0x00 <repo>@referrers/<digest>.
// Open moves any such record to its R key (and drops one whose name does not
// parse) in one batch: they are a cache of upstream's answers, but an
// offline mirror can never fetch them again, so they are kept, not ignored.
// The scan reads only the T records (one per listed repository), so it costs
// next to nothing at every Open once the move is done.
//
// Last-access times are recorded in memory on every hit and written to Badger
// in one transaction every Options.AccessFlushInterval (default 5s), and at
// Close, so serving a hit costs no disk write. A crash loses at most that
// interval's access times, which only makes eviction slightly less precise.
//
// # Crash safety
//
// The invariant is that a file under blobs/ always holds exactly the content
// its name says, and that a crash at any moment loses at most the downloads
// in progress. A Writer hashes bytes as they are written to a uniquely named
// file in tmp/. Commit checks size and digest, fsyncs the file, renames it
// into blobs/ (atomic: same filesystem), fsyncs the directory, and only then
// writes the index record (Badger runs with synchronous writes). Delete
// removes the index record first and the file second. So after a crash at
// any point:
//
//   - files in tmp/ are downloads in progress: Open removes them all;
//   - a blob file without a record (crash between rename and index write, or
//     between a Delete's two steps; or, in a run that then closed cleanly,
//     a removal or an index write that failed) is re-hashed; if it matches its name it is
//     indexed again, otherwise it is removed. Its media type was lost with
//     the record: a file of at most 4 MiB that is a manifest or index
//     (schemaVersion 2 and the shape of one) gets its own mediaType, or the
//     OCI type of its shape; anything else "application/octet-stream". Put
//     of a stored blob whose record has that generic type records the type
//     it is given;
//   - a record whose file is missing or has another size is dropped;
//   - names under blobs/sha256 that are not valid digests in the right
//     fan-out directory are removed.
//
// Content damaged on disk after it was verified (same size, other bytes)
// is found by VerifyAll and the background scrub (Options.ScrubInterval),
// which re-hash every blob through one fixed buffer at a bounded rate,
// holding no lock while they read, and by ReadAll, which hashes what it
// returns. The damaged blob is removed at once, index record first, but
// only if its path still names the file that was hashed: a blob evicted,
// or evicted and fetched again, meanwhile is left alone.
//
// Reconcile is O(number of files + number of records) and logs a one-line
// summary. Usage totals are computed from its result and then maintained in
// memory.
//
// # A full disk
//
// Badger writes its memtable log and value log through mmapped sparse
// files: on a full filesystem a store into a new page is not an error but
// SIGBUS, which kills the process. So blob writes, the one large consumer
// of the data dir, stop while the filesystem still has
// Options.IndexReserve free (default DefaultIndexReserve, 112 MiB: two
// memtables, one value-log file and a margin; at most half of a small
// filesystem): Create and Write fail with ErrNoSpace, as on a really full
// disk, and the caller frees space or passes the download through. Free
// space is measured with statfs when Create or Write has spent what the
// last measurement allowed (at most 4 MiB, shared by all Writers), and
// again after every refusal. Other processes filling the filesystem are
// not guarded against.
//
// # Clean shutdown
//
// Close, after its final access flush and Badger's close have succeeded,
// and unless the run left a blob file without a record (a Delete, stale or
// corrupt blob whose file could not be removed, a Commit whose index write
// failed after the rename: the file is then for reconcile to index again
// or remove, and is not counted in Usage until it has), writes
// data_dir/clean-shutdown (temp file, fsync, rename, fsync of the
// dir): a format version, the data dir's absolute path and inode, and the
// usage totals. Open reads it and removes it, durably, before Badger is
// opened and before anything can change. A marker that is present, of this
// version and written for this very dir (not a copy, not a dir restored at
// the same path) is trusted: index and files agreed when it was written and
// nothing has touched them since, so Open only clears tmp/, takes the
// totals from the marker and skips the walk of files and records. Any other
// marker is ignored. A crash at
// any moment leaves no marker (Close had not written it, or Open had
// already removed it), so the next Open reconciles fully. Damage done to
// files while the cache was stopped is the scrub's to find, as it is
// while it runs. Observers are not told about blobs found at Open; consumers
// build their initial state with Walk.
package cache
