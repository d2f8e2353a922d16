package proxy

import (
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
)

// The cache as each part of the proxy uses it: one small interface per job,
// owned here. Store, their union, is what Options takes; *cache.Store
// implements it, and a decorator of the whole (a metadata cache in front)
// does too. Optional sides (the catalog's repositoryLister) are found on it
// by type assertion.

// blobStore is what the blob path and the fill use: cached files, and new
// ones written through the cache's hashing writer.
type blobStore interface {
	Stat(d digest.Digest) (cache.BlobInfo, error)
	Open(d digest.Digest) (*os.File, cache.BlobInfo, error)
	Create(d digest.Digest, mediaType string) (*cache.Writer, error)
}

// manifestStore is what the manifest path uses: small blobs read and
// stored whole.
type manifestStore interface {
	ReadAll(d digest.Digest, max int64) ([]byte, cache.BlobInfo, error)
	Put(d digest.Digest, mediaType string, data []byte) (cache.BlobInfo, error)
	PutScoped(d digest.Digest, mediaType string, data []byte) (cache.BlobInfo, error)
}

// tagStore is what tag freshness uses: the digest a tag pointed to, and
// when upstream last said so.
type tagStore interface {
	Tag(registry, repo, tag string) (cache.TagRecord, error)
	SetTag(registry, repo, tag string, rec cache.TagRecord) error
}

// linkStore records which repositories a digest was fetched for or
// confirmed in (private registries, private.go).
type linkStore interface {
	AddLink(registry, repo string, d digest.Digest) error
	HasLink(registry, repo string, d digest.Digest) (bool, error)
}

// answerStore keeps the last answers served while upstream is down: tag
// lists (tags.go) and referrers indexes (referrers.go).
type answerStore interface {
	TagList(registry, repo string) ([]byte, error)
	SetTagList(registry, repo string, body []byte) error
	Referrers(registry, repo string, subject digest.Digest) ([]byte, error)
	SetReferrers(registry, repo string, subject digest.Digest, body []byte) error
}

// Store is everything the proxy needs from the cache.
type Store interface {
	blobStore
	manifestStore
	tagStore
	linkStore
	answerStore
}

var _ Store = (*cache.Store)(nil)
