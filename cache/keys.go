package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/regmirror/regmirror/imageref"
)

// Record-type prefix bytes. See doc.go for the full layout.
const (
	prefixBlob    = 'b'
	prefixTag     = 't'
	prefixLink    = 'l'
	prefixTagList = 'T'
	sep           = 0x00

	valueVersion byte = 1

	// maxKeyPart bounds each caller-supplied key part. Registry hosts,
	// repository names (255 per the distribution spec) and tags (128) are
	// all far shorter; the bound keeps keys well under Badger's limit.
	maxKeyPart = 1024

	// The blob record's flags byte is reserved (written as 0): pins are
	// image records (SetPin), not per-blob flags.
)

// MaxTagListSize caps the tags/list body stored by SetTagList.
const MaxTagListSize = 1 << 20

var errCorrupt = errors.New("cache: corrupt index record")

// validateDigest accepts only sha256 digests with 64 lowercase hex
// characters (imageref.CheckDigest, checked again here because the hex
// becomes a path) and returns the hex part, the only text allowed into a path.
func validateDigest(d digest.Digest) (string, error) {
	if err := imageref.CheckDigest(d); err != nil {
		return "", fmt.Errorf("%w: %q", ErrInvalidDigest, string(d))
	}
	hex := d.Encoded()
	if !isHex64(hex) {
		return "", fmt.Errorf("%w: %q", ErrInvalidDigest, string(d))
	}
	return hex, nil
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLowerHex(s[i]) {
			return false
		}
	}
	return true
}

func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

func validateParts(parts ...string) error {
	for _, p := range parts {
		if p == "" || len(p) > maxKeyPart || strings.IndexByte(p, sep) >= 0 {
			return fmt.Errorf("%w: %q", ErrInvalidKey, p)
		}
	}
	return nil
}

// makeKey joins prefix and parts with 0x00 separators. Parts must already be
// validated.
func makeKey(prefix byte, parts ...string) []byte {
	n := 1
	for _, p := range parts {
		n += 1 + len(p)
	}
	k := make([]byte, 0, n)
	k = append(k, prefix)
	for _, p := range parts {
		k = append(k, sep)
		k = append(k, p...)
	}
	return k
}

func blobKey(d digest.Digest) []byte { return makeKey(prefixBlob, string(d)) }

func blobPrefix() []byte { return []byte{prefixBlob, sep} }

func putTime(b []byte, t time.Time) []byte {
	var n int64
	if !t.IsZero() {
		n = t.UnixNano()
	}
	return binary.BigEndian.AppendUint64(b, uint64(n))
}

func getTime(b []byte) time.Time {
	n := int64(binary.BigEndian.Uint64(b))
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// blobRecord is the stored part of a BlobInfo (the digest is the key).
type blobRecord struct {
	size       int64
	mediaType  string
	created    time.Time
	lastAccess time.Time
}

const blobFixed = 1 + 8 + 8 + 8 + 1

func (r blobRecord) encode() []byte {
	b := make([]byte, 0, blobFixed+len(r.mediaType))
	b = append(b, valueVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(r.size))
	b = putTime(b, r.created)
	b = putTime(b, r.lastAccess)
	b = append(b, 0) // flags, reserved
	return append(b, r.mediaType...)
}

func decodeBlob(b []byte) (blobRecord, error) {
	if len(b) < blobFixed || b[0] != valueVersion {
		return blobRecord{}, errCorrupt
	}
	r := blobRecord{
		size:       int64(binary.BigEndian.Uint64(b[1:9])),
		created:    getTime(b[9:17]),
		lastAccess: getTime(b[17:25]),
		mediaType:  string(b[blobFixed:]),
	}
	if r.size < 0 {
		return blobRecord{}, errCorrupt
	}
	return r, nil
}

func (r blobRecord) info(d digest.Digest) BlobInfo {
	return BlobInfo{
		Digest:     d,
		Size:       r.size,
		MediaType:  r.mediaType,
		Created:    r.created,
		LastAccess: r.lastAccess,
	}
}

func encodeTag(rec TagRecord) []byte {
	b := make([]byte, 0, 1+8+1+len(rec.Digest)+len(rec.MediaType))
	b = append(b, valueVersion)
	b = putTime(b, rec.CheckedAt)
	b = append(b, byte(len(rec.Digest)))
	b = append(b, rec.Digest...)
	return append(b, rec.MediaType...)
}

func decodeTag(b []byte) (TagRecord, error) {
	if len(b) < 10 || b[0] != valueVersion {
		return TagRecord{}, errCorrupt
	}
	n := int(b[9])
	if len(b) < 10+n {
		return TagRecord{}, errCorrupt
	}
	return TagRecord{
		CheckedAt: getTime(b[1:9]),
		Digest:    digest.Digest(b[10 : 10+n]),
		MediaType: string(b[10+n:]),
	}, nil
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
