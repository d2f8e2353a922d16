// Package testpull is the client side of the tests that pull through a
// mirror: pull an image or index with go-containerregistry's client and
// verify every byte, plain HTTP requests, and checks on what a mirror left
// in its data dir (invariant 1: each blob file holds what its name says).
// Package main's tests and proxy's tests both drive mirrors this way.
package testpull

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Ref names an image on a mirror at host the way the Docker daemon asks
// for it: bare /v2/<repo>/..., which means docker.io.
func Ref(t testing.TB, host, image string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(host+"/"+image, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TotalBlobGETs sums upstream's blob GETs over every blob cached in dataDir.
func TotalBlobGETs(t testing.TB, up interface{ BlobGETs(digest.Digest) int }, dataDir string) int {
	n := 0
	for hexName := range BlobFiles(t, dataDir) {
		n += up.BlobGETs(digest.NewDigestFromEncoded(digest.SHA256, hexName))
	}
	return n
}

// All pulls an image or index with go-containerregistry's client, reading
// and verifying every manifest, config and layer. It returns the
// top-level digest.
func All(t testing.TB, ref name.Reference) digest.Digest {
	t.Helper()
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		if err != nil {
			t.Fatal(err)
		}
		Image(t, img)
		return digest.Digest(desc.Digest.String())
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, child := range im.Manifests {
		img, err := idx.Image(child.Digest)
		if err != nil {
			t.Fatalf("child %s: %v", child.Digest, err)
		}
		Image(t, img)
	}
	return digest.Digest(desc.Digest.String())
}

// Image reads an image's config and every layer, checking each layer's
// bytes against its digest.
func Image(t testing.TB, img v1.Image) {
	t.Helper()
	if _, err := img.RawConfigFile(); err != nil {
		t.Fatalf("config: %v", err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		want, _ := l.Digest()
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("layer %s: %v", want, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("layer %s: %v", want, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want.String() {
			t.Fatalf("layer digest %s, want %s", got, want)
		}
	}
}

// Send does a plain HTTP request (header: name, value, ...) and reads the
// whole body; a body cut short is returned as far as it came.
func Send(t testing.TB, method, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, body
}

// StartDownload GETs url and reads its first n bytes, so the caller holds
// a download in progress; it returns the response and the bytes read.
func StartDownload(t testing.TB, url string, n int) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, n)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		resp.Body.Close()
		t.Fatalf("reading the first %d bytes of %s: %v", n, url, err)
	}
	return resp, first
}

// BlobFiles lists the content files (hex names) under a data dir.
func BlobFiles(t testing.TB, dataDir string) map[string]bool {
	t.Helper()
	files := map[string]bool{}
	root := filepath.Join(dataDir, "blobs", "sha256")
	filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files[d.Name()] = true
		}
		return nil
	})
	return files
}

// VerifyBlobFiles proves invariant 1 over a data dir: each file holds what
// its name says. It returns how many files it checked.
func VerifyBlobFiles(t testing.TB, dataDir string) int {
	t.Helper()
	n := 0
	for hexName := range BlobFiles(t, dataDir) {
		path := filepath.Join(dataDir, "blobs", "sha256", hexName[:2], hexName)
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // evicted since the listing
		}
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, f)
		f.Close()
		if got := hex.EncodeToString(h.Sum(nil)); got != hexName {
			t.Fatalf("blob file %s holds content %s", hexName, got)
		}
		n++
	}
	return n
}

// TmpFiles lists the downloads in progress (or left behind) in a data dir.
func TmpFiles(t testing.TB, dataDir string) []string {
	entries, _ := os.ReadDir(filepath.Join(dataDir, "tmp"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// Eventually polls cond until it holds; for outcomes that follow a
// request's end asynchronously (a fill's commit), never for ordering.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// manifestTypes is the Accept header registry clients send for manifests.
const manifestTypes = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

// Do sends a request as registry clients do (accepting every manifest
// type), with host, if not empty, as its Host header; it returns the
// response and its whole body.
func Do(t testing.TB, method, u, host string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", manifestTypes)
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	return resp, body
}

// WantContent checks a 200 answer whose body (for GET) has digest want.
func WantContent(t testing.TB, what string, resp *http.Response, body []byte, want digest.Digest) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s: status %d, want 200 (body %s)", what, resp.StatusCode, body)
		return
	}
	if resp.Request.Method == http.MethodGet {
		if got := digest.FromBytes(body); got != want {
			t.Errorf("%s: body digest %s, want %s", what, got, want)
		}
	}
}

// NS pulls repo:tag of registry through the mirror at mirrorURL the way
// containerd asks (bare paths with ?ns=), reading the manifest, config and
// every layer and checking each digest; it returns the manifest's digest.
func NS(t testing.TB, mirrorURL, registry, repo, tag string) digest.Digest {
	t.Helper()
	ns := "?ns=" + url.QueryEscape(registry)
	resp, body := Do(t, http.MethodGet, mirrorURL+"/v2/"+repo+"/manifests/"+tag+ns, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/%s:%s: %d %s", registry, repo, tag, resp.StatusCode, body)
	}
	var mf struct {
		Config struct{ Digest digest.Digest }
		Layers []struct{ Digest digest.Digest }
	}
	if err := json.Unmarshal(body, &mf); err != nil || mf.Config.Digest == "" {
		t.Fatalf("%s/%s:%s: not an image manifest (%v): %s", registry, repo, tag, err, body)
	}
	blobs := []digest.Digest{mf.Config.Digest}
	for _, l := range mf.Layers {
		blobs = append(blobs, l.Digest)
	}
	for _, d := range blobs {
		resp, b := Do(t, http.MethodGet, mirrorURL+"/v2/"+repo+"/blobs/"+d.String()+ns, "")
		WantContent(t, "blob "+d.String(), resp, b, d)
	}
	return digest.FromBytes(body)
}

// Metric is the sum of the samples of the metric family name on the
// mirror's /metrics (0 when it has none).
func Metric(t testing.TB, mirrorURL, name string) float64 {
	t.Helper()
	sum, _ := MetricSum(t, mirrorURL, name)
	return sum
}

// MetricSum adds up the samples of the metric family name on the mirror's
// /metrics whose labels include every name, value pair in labels; found
// reports whether any sample matched. The page is parsed by Prometheus's
// own text parser, so labels match exactly.
func MetricSum(t testing.TB, mirrorURL, name string, labels ...string) (sum float64, found bool) {
	t.Helper()
	resp, body := Send(t, http.MethodGet, mirrorURL+"/metrics")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s/metrics: %d", mirrorURL, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s/metrics: %v", mirrorURL, err)
	}
	value := sampleValue
	family := families[name]
	if family == nil { // a histogram's or summary's _count or _sum
		for suffix, v := range map[string]func(*dto.Metric) float64{"_count": sampleCount, "_sum": sampleSum} {
			if base, ok := strings.CutSuffix(name, suffix); ok && families[base] != nil {
				family, value = families[base], v
			}
		}
	}
	if family == nil {
		return 0, false
	}
	for _, m := range family.GetMetric() {
		if hasLabels(m.GetLabel(), labels) {
			sum += value(m)
			found = true
		}
	}
	return sum, found
}

func hasLabels(have []*dto.LabelPair, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		if !slices.ContainsFunc(have, func(l *dto.LabelPair) bool { return l.GetName() == want[i] && l.GetValue() == want[i+1] }) {
			return false
		}
	}
	return true
}

// sampleValue is a counter's, gauge's or untyped sample's value, or a
// histogram's or summary's count.
func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil, m.Summary != nil:
		return sampleCount(m)
	}
	return m.GetUntyped().GetValue()
}

func sampleCount(m *dto.Metric) float64 {
	if m.Histogram != nil {
		return float64(m.Histogram.GetSampleCount())
	}
	return float64(m.GetSummary().GetSampleCount())
}

func sampleSum(m *dto.Metric) float64 {
	if m.Histogram != nil {
		return m.Histogram.GetSampleSum()
	}
	return m.GetSummary().GetSampleSum()
}
