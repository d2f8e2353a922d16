package cache

import (
	"errors"
	"fmt"
	"syscall"
)

// Sentinel errors. Errors returned by the Store wrap one of these where one
// applies; test them with errors.Is.
var (
	// ErrNotFound: no such blob, tag, link or tag list.
	ErrNotFound = errors.New("cache: not found")
	// ErrInvalidDigest: not a valid sha256 digest (only sha256 is accepted).
	ErrInvalidDigest = errors.New("cache: invalid digest")
	// ErrInvalidKey: a registry, repository or tag is empty, too long, or
	// contains a 0x00 byte (the index key separator).
	ErrInvalidKey = errors.New("cache: invalid registry, repository or tag")
	// ErrDigestMismatch: content hashed to another digest.
	ErrDigestMismatch = errors.New("cache: digest mismatch")
	// ErrSizeMismatch: content length differs from the expected size.
	ErrSizeMismatch = errors.New("cache: size mismatch")
	// ErrTooLarge: content exceeds the caller's limit (ReadAll) or
	// MaxTagListSize (SetTagList).
	ErrTooLarge = errors.New("cache: content too large")
	// ErrNoSpace: the filesystem holding the data directory is full.
	ErrNoSpace = errors.New("cache: no space left on device")
	// ErrBusy: the data directory is locked by another Store or process.
	ErrBusy = errors.New("cache: data directory in use")
	// ErrClosed: the Store or Writer is closed.
	ErrClosed = errors.New("cache: closed")
)

// classify wraps err with ErrNoSpace when it is, at bottom, ENOSPC (or EDQUOT,
// which a caller must treat the same way: stop writing, free space).
func classify(err error) error {
	if err == nil || errors.Is(err, ErrNoSpace) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}
