package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
	digest "github.com/opencontainers/go-digest"
)

// SetMediaType replaces the media type recorded for blob d. Import uses it
// (it is archive.MediaTypeSetter) when an archive names a blob's type only
// after the blob has been stored. The error wraps ErrNotFound if d is absent.
func (s *Store) SetMediaType(d digest.Digest, mediaType string) error {
	hex, err := validateDigest(d)
	if err != nil {
		return err
	}
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	mu := s.stripe(hex)
	mu.Lock()
	defer mu.Unlock()
	return s.update(func(txn *badger.Txn) error {
		rec, err := blobInTxn(txn, d)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: blob %s", ErrNotFound, d)
		}
		if err != nil {
			return err
		}
		if rec.mediaType == mediaType {
			return nil
		}
		rec.mediaType = mediaType
		return txn.Set(blobKey(d), rec.encode())
	})
}

// maxSniffSize bounds the files reconcile reads whole to recognise a
// manifest: the manifest size cap of registries and of the proxy.
const maxSniffSize = 4 << 20

// The manifest and index media types of the OCI image spec and Docker's
// schema 2, the four regmirror serves.
const (
	mediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// sniffMediaType names content found on disk without a record (see
// repairIndex): a manifest or index, recognised by schemaVersion 2 and its
// shape (an image manifest has a config object and a layers array, an
// index a manifests array, never both), gets its own mediaType field, or
// the OCI type of its shape when it has none (OCI allows leaving it out).
// Anything else gets defaultMediaType: a manifest served with that type is
// refused by clients, a blob served with it is what they expect.
func sniffMediaType(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return defaultMediaType
	}
	var m struct {
		SchemaVersion *int            `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Config        json.RawMessage `json:"config"`
		Layers        json.RawMessage `json:"layers"`
		Manifests     json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(b, &m) != nil || m.SchemaVersion == nil || *m.SchemaVersion != 2 {
		return defaultMediaType
	}
	image := jsonKind(m.Config, '{') && jsonKind(m.Layers, '[') && m.Manifests == nil
	index := jsonKind(m.Manifests, '[') && m.Config == nil && m.Layers == nil
	switch m.MediaType {
	case mediaTypeOCIManifest, mediaTypeDockerManifest:
		if image {
			return m.MediaType
		}
	case mediaTypeOCIIndex, mediaTypeDockerList:
		if index {
			return m.MediaType
		}
	case "":
		if image {
			return mediaTypeOCIManifest
		}
		if index {
			return mediaTypeOCIIndex
		}
	}
	return defaultMediaType
}

// jsonKind reports whether raw is a JSON value opening with c ('{' or '[').
func jsonKind(raw json.RawMessage, c byte) bool {
	return len(raw) > 0 && raw[0] == c
}
