package admin

import (
	"context"
	"errors"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/regmirror/regmirror/imageref"
)

// Ops are the management operations on one mirror's cache.
type Ops interface {
	// Usage reports sizes and budget, with the top repositories by bytes.
	Usage(ctx context.Context, top int) (Usage, error)
	// GC runs eviction down to the low watermark now.
	GC(ctx context.Context) (GCResult, error)
	// Images lists the cached tags and digests that pins name.
	Images(ctx context.Context) ([]Image, error)
	// Pin protects digests under name (replacing a pin of that name).
	Pin(ctx context.Context, name string, digests []digest.Digest) error
	// PinRef resolves ref against the cache and pins the cached part of its
	// graph under ref's full name.
	PinRef(ctx context.Context, ref string) (PinResult, error)
	// Unpin removes the pin called name.
	Unpin(ctx context.Context, name string) error
}

// Errors of this package, sent across HTTP by their text and mapped back by
// the Client.
var (
	ErrNotCached = errors.New("admin: not in the cache")
	// ErrInvalidRef is imageref.ErrInvalidReference, so that a reference
	// imageref refuses needs no second wrapping here.
	ErrInvalidRef   = imageref.ErrInvalidReference
	ErrNoSuchPin    = errors.New("admin: no such pin")
	ErrUnavailable  = errors.New("admin: server unavailable")
	ErrUnauthorized = errors.New("admin: not authorized")
)

// Usage describes the cache's size against its budget.
type Usage struct {
	DataDir     string      `json:"data_dir"`
	Bytes       int64       `json:"bytes"`
	Blobs       int64       `json:"blobs"`
	MaxBytes    int64       `json:"max_bytes"` // 0: no budget
	HighBytes   int64       `json:"high_bytes"`
	LowBytes    int64       `json:"low_bytes"`
	MinFree     int64       `json:"min_free"`
	FreeBytes   int64       `json:"free_bytes"` // on the filesystem; -1 unknown
	PinnedBytes int64       `json:"pinned_bytes"`
	PinnedBlobs int64       `json:"pinned_blobs"`
	Pins        int         `json:"pins"`
	Evicted     int64       `json:"evicted_blobs"` // since the server started
	TopRepos    []RepoUsage `json:"top_repositories"`
}

// RepoUsage is the bytes of the blobs seen in one repository. Blobs shared
// between repositories count in each.
type RepoUsage struct {
	Registry string `json:"registry"`
	Repo     string `json:"repository"`
	Bytes    int64  `json:"bytes"`
	Blobs    int    `json:"blobs"`
}

// GCResult reports one eviction run.
type GCResult struct {
	Blobs     int   `json:"blobs"`
	Bytes     int64 `json:"bytes"`
	Remaining int64 `json:"remaining"`
	Failed    int   `json:"failed"`
}

// Image is one cached tag, or a pinned image.
type Image struct {
	Ref       string        `json:"ref"` // full reference: registry/repo:tag or registry/repo@digest
	Registry  string        `json:"registry"`
	Repo      string        `json:"repository"`
	Tag       string        `json:"tag,omitempty"`
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"media_type,omitempty"`
	CheckedAt time.Time     `json:"checked_at,omitzero"`
	Pinned    bool          `json:"pinned"`
}

// PinResult reports a pin.
type PinResult struct {
	Name    string        `json:"name"`
	Digest  digest.Digest `json:"digest"`
	Blobs   int           `json:"blobs"`
	Bytes   int64         `json:"bytes"`
	Missing int           `json:"missing"` // graph members not cached (platforms not pulled)
}
