package upstream

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"

	"github.com/opencontainers/go-digest"
)

// manifestKind tells an image manifest (config and layers) from an index
// (a list of manifests).
type manifestKind int

const (
	kindManifest manifestKind = iota + 1
	kindIndex
)

var knownManifestTypes = map[string]manifestKind{
	MediaTypeOCIManifest:        kindManifest,
	MediaTypeDockerManifest:     kindManifest,
	MediaTypeOCIIndex:           kindIndex,
	MediaTypeDockerManifestList: kindIndex,
}

// genericType reports Content-Types that say nothing about a manifest
// (some registries send these); the body's mediaType decides then.
func genericType(mt string) bool {
	switch mt {
	case "", "application/json", "text/plain", "application/octet-stream":
		return true
	}
	return false
}

// descriptorJSON is the part of an OCI descriptor validation looks at.
type descriptorJSON struct {
	Digest string `json:"digest"`
	Size   *int64 `json:"size"`
}

type manifestJSON struct {
	SchemaVersion *int              `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	Config        *descriptorJSON   `json:"config"`
	Layers        *[]descriptorJSON `json:"layers"`
	Manifests     *[]descriptorJSON `json:"manifests"`
	Subject       *descriptorJSON   `json:"subject"`
}

// validateManifest checks that body is a manifest regmirror knows how to
// serve and returns its media type. The media type is Content-Type's
// (without parameters) when that is one of the four known types; a generic
// Content-Type ("", application/json, text/plain, application/octet-stream)
// defers to the body's mediaType field, and, for OCI bodies without one, to
// its shape (manifests → OCI index; config and layers → OCI manifest). Any
// other Content-Type is refused. The body must be one JSON object with
// schemaVersion 2, a mediaType field (if any) equal to the media type, and
// the fields of its kind: an image manifest has a config descriptor and a
// layers array and no manifests; an index has a manifests array and no
// config or layers. Descriptors need a valid digest and a size >= 0.
// Errors wrap ErrInvalidManifest.
func validateManifest(contentType string, body []byte) (string, error) {
	ct, err := manifestContentType(contentType)
	if err != nil {
		return "", err
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return "", invalidManifest("not a JSON object")
	}
	var m manifestJSON
	if err := json.Unmarshal(body, &m); err != nil {
		return "", invalidManifest("JSON: %v", err)
	}
	if m.SchemaVersion == nil || *m.SchemaVersion != 2 {
		return "", invalidManifest("schemaVersion is not 2")
	}
	mt, err := manifestMediaType(ct, m)
	if err != nil {
		return "", err
	}
	if err := checkShape(mt, m); err != nil {
		return "", err
	}
	return mt, nil
}

// manifestContentType reads the response's Content-Type: a manifest type,
// a generic one (JSON, octet-stream), or none ("").
func manifestContentType(contentType string) (string, error) {
	ct, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		if contentType != "" {
			return "", invalidManifest("unparsable Content-Type")
		}
		return "", nil
	}
	if !genericType(ct) {
		if _, ok := knownManifestTypes[ct]; !ok {
			return "", invalidManifest("Content-Type %q is not a manifest type", ct)
		}
	}
	return ct, nil
}

// manifestMediaType decides the manifest's media type: a specific
// Content-Type, which the body's mediaType must not contradict; else the
// body's mediaType; else an OCI index or manifest by shape.
func manifestMediaType(ct string, m manifestJSON) (string, error) {
	switch {
	case !genericType(ct):
		if m.MediaType != "" && m.MediaType != ct {
			return "", invalidManifest("mediaType %q contradicts Content-Type %q", m.MediaType, ct)
		}
		return ct, nil
	case m.MediaType != "":
		if _, ok := knownManifestTypes[m.MediaType]; !ok {
			return "", invalidManifest("mediaType %q is not a manifest type", m.MediaType)
		}
		return m.MediaType, nil
	case m.Manifests != nil:
		return MediaTypeOCIIndex, nil
	}
	return MediaTypeOCIManifest, nil
}

// checkShape checks that m has the fields its media type mt needs, and
// that every descriptor in it is sound.
func checkShape(mt string, m manifestJSON) error {
	switch knownManifestTypes[mt] {
	case kindManifest:
		if m.Config == nil || m.Layers == nil || m.Manifests != nil {
			return invalidManifest("%s needs config and layers and no manifests", mt)
		}
		if err := checkDescriptor("config", *m.Config); err != nil {
			return err
		}
		for i, l := range *m.Layers {
			if err := checkDescriptor(fmt.Sprintf("layer %d", i), l); err != nil {
				return err
			}
		}
	case kindIndex:
		if m.Manifests == nil || m.Config != nil || m.Layers != nil {
			return invalidManifest("%s needs manifests and no config or layers", mt)
		}
		for i, c := range *m.Manifests {
			if err := checkDescriptor(fmt.Sprintf("manifest %d", i), c); err != nil {
				return err
			}
		}
	}
	if m.Subject != nil {
		return checkDescriptor("subject", *m.Subject)
	}
	return nil
}

func checkDescriptor(what string, d descriptorJSON) error {
	if _, err := digest.Parse(d.Digest); err != nil {
		return invalidManifest("%s: digest %q: %v", what, d.Digest, err)
	}
	if d.Size == nil || *d.Size < 0 {
		return invalidManifest("%s: missing or negative size", what)
	}
	return nil
}

func invalidManifest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidManifest, fmt.Sprintf(format, args...))
}
