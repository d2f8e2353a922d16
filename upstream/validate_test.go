package upstream

import (
	"errors"
	"strings"
	"testing"
)

const (
	testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	desc       = `{"mediaType":"application/octet-stream","digest":"` + testDigest + `","size":12}`
	ociImage   = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":` + desc + `,"layers":[` + desc + `]}`
	ociBare    = `{"schemaVersion":2,"config":` + desc + `,"layers":[]}`
	ociIndex   = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + desc + `]}`
	bareIndex  = `{"schemaVersion":2,"manifests":[]}`
	dockerImg  = `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":` + desc + `,"layers":[` + desc + `]}`
	dockerList = `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[` + desc + `]}`
)

func TestValidateManifest(t *testing.T) {
	for _, tc := range []struct {
		name, ct, body string
		want           string // media type; "" for refused
	}{
		{"oci image", MediaTypeOCIManifest, ociImage, MediaTypeOCIManifest},
		{"oci image, charset", MediaTypeOCIManifest + "; charset=utf-8", ociImage, MediaTypeOCIManifest},
		{"oci image without mediaType", MediaTypeOCIManifest, ociBare, MediaTypeOCIManifest},
		{"oci index", MediaTypeOCIIndex, ociIndex, MediaTypeOCIIndex},
		{"docker image", MediaTypeDockerManifest, dockerImg, MediaTypeDockerManifest},
		{"docker list", MediaTypeDockerManifestList, dockerList, MediaTypeDockerManifestList},
		{"generic type, mediaType decides", "application/json", dockerList, MediaTypeDockerManifestList},
		{"no type, shape decides: index", "", bareIndex, MediaTypeOCIIndex},
		{"no type, shape decides: image", "text/plain", ociBare, MediaTypeOCIManifest},
		{"with subject", MediaTypeOCIManifest, strings.TrimSuffix(ociImage, "}") + `,"subject":` + desc + `}`, MediaTypeOCIManifest},

		{"html", "text/html", "<html></html>", ""},
		{"unknown type", "application/vnd.oci.artifact.manifest.v1+json", ociImage, ""},
		{"bad Content-Type", "a/b; ===", ociImage, ""},
		{"type mismatch: image as index", MediaTypeOCIIndex, ociImage, ""},
		{"type mismatch: docker vs oci", MediaTypeDockerManifest, ociImage, ""},
		{"mediaType contradicts shape", MediaTypeOCIIndex, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","config":` + desc + `,"layers":[]}`, ""},
		{"generic type, unknown mediaType", "application/json", `{"schemaVersion":2,"mediaType":"text/html","manifests":[]}`, ""},
		{"schema 1", "application/json", `{"schemaVersion":1,"fsLayers":[]}`, ""},
		{"no schemaVersion", MediaTypeOCIManifest, `{"config":` + desc + `,"layers":[]}`, ""},
		{"metadata JSON", "application/json", `{"AccessKeyId":"x"}`, ""},
		{"array", MediaTypeOCIIndex, `[1]`, ""},
		{"truncated", MediaTypeOCIManifest, ociImage[:40], ""},
		{"trailing garbage", MediaTypeOCIManifest, ociImage + "x", ""},
		{"image without layers", MediaTypeOCIManifest, `{"schemaVersion":2,"config":` + desc + `}`, ""},
		{"image with manifests", MediaTypeOCIManifest, `{"schemaVersion":2,"config":` + desc + `,"layers":[],"manifests":[]}`, ""},
		{"bad digest", MediaTypeOCIManifest, strings.ReplaceAll(ociImage, testDigest, "sha256:xyz"), ""},
		{"negative size", MediaTypeOCIIndex, `{"schemaVersion":2,"manifests":[{"digest":"` + testDigest + `","size":-1}]}`, ""},
		{"missing size", MediaTypeOCIIndex, `{"schemaVersion":2,"manifests":[{"digest":"` + testDigest + `"}]}`, ""},
		{"bad subject", MediaTypeOCIManifest, strings.TrimSuffix(ociImage, "}") + `,"subject":{}}`, ""},
		{"empty", MediaTypeOCIManifest, "", ""},
	} {
		got, err := validateManifest(tc.ct, []byte(tc.body))
		if tc.want == "" {
			if err == nil || !errors.Is(err, ErrInvalidManifest) || !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s: got %q, %v; want ErrInvalidManifest", tc.name, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

// FuzzValidateManifest: any Content-Type and body either is refused with
// ErrInvalidManifest or yields one of the four known media types, never a
// panic.
func FuzzValidateManifest(f *testing.F) {
	for _, s := range []struct{ ct, body string }{
		{MediaTypeOCIManifest, ociImage}, {MediaTypeOCIIndex, ociIndex}, {MediaTypeDockerManifest, dockerImg},
		{MediaTypeDockerManifestList, dockerList}, {"", bareIndex}, {"application/json", ociBare},
		{"text/html", "<html>"}, {"", `{"schemaVersion":2,"config":null,"layers":null}`}, {"a/b;c", "{}"},
	} {
		f.Add(s.ct, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		mt, err := validateManifest(ct, body)
		if err != nil {
			if !errors.Is(err, ErrInvalidManifest) {
				t.Fatalf("error %v is not ErrInvalidManifest", err)
			}
			return
		}
		if _, ok := knownManifestTypes[mt]; !ok {
			t.Fatalf("accepted with media type %q", mt)
		}
	})
}
