package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/internal/realclient"
	"github.com/regmirror/regmirror/internal/testlog"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// TestAirGapRoundTrip: preload three images (two of a three-platform index,
// an OCI image, a Docker schema 2 image) from the test upstream, export
// them, import the archive into a fresh data dir, stop the upstream and
// serve offline: the Docker daemon and skopeo pull every image with the
// right digests, and the platform never preloaded answers 404.
func TestAirGapRoundTrip(t *testing.T) {
	up := testupstream.Start(t)
	plats := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}, {OS: "linux", Architecture: "s390x"}}
	multi := up.PushRandomIndex(t, "library/multi", "latest", plats, 2, 32<<10)
	oci := up.PushRandomOCIImage(t, "org/ociapp", "v1", 2, 32<<10)
	schema2 := up.PushRandomImage(t, "library/alpine", "3.20", 2, 32<<10)
	children := childDigests(t, multi)

	src := t.TempDir()
	conf := writeTestConfig(t, src, up.URL())
	list := filepath.Join(t.TempDir(), "images.txt")
	os.WriteFile(list, []byte("# the site's images\norg/ociapp:v1\n\nalpine:3.20  # schema 2\n"), 0o644)
	out := runCLI(t, "preload", "--config", conf, "--platform", "linux/amd64,linux/arm64", "--file", list, "multi:latest")
	if !strings.Contains(out, "preloaded 3 of 3 images") {
		t.Fatalf("preload output:\n%s", out)
	}
	if up.BlobGETs(children["s390x"]) != 0 || up.Count(http.MethodGet, "/v2/library/multi/manifests/"+children["s390x"].String()) != 0 {
		t.Error("preload fetched the platform it was not asked for")
	}
	// A second preload finds everything cached.
	out = runCLI(t, "preload", "--config", conf, "--platform", "linux/amd64,linux/arm64", "multi:latest")
	if !strings.Contains(out, "0 blobs fetched (0 B)") {
		t.Errorf("second preload fetched again:\n%s", out)
	}

	site := filepath.Join(t.TempDir(), "site.tar")
	out = runCLI(t, "export", "--config", conf, "--out", site, "--all")
	if !strings.Contains(out, "3 images") {
		t.Fatalf("export output:\n%s", out)
	}
	if got, want := skopeoInspectArchive(t, site, "docker.io/org/ociapp:v1"), testupstream.Digest(t, oci).String(); got != want {
		t.Errorf("skopeo inspect oci-archive: %s, want %s", got, want)
	}

	dst := t.TempDir()
	out = runCLI(t, "import", "--config", writeTestConfig(t, dst, up.URL()), site)
	if !strings.Contains(out, "3 images") {
		t.Fatalf("import output:\n%s", out)
	}
	up.Close()

	m := startMirror(t, up, func(c *config) {
		c.DataDir = dst
		c.Offline = true
		c.TagTTL = duration{time.Nanosecond} // every tag is old: offline serves it anyway
	})
	d := realclient.StartDockerd(t, m.url)
	for ref, want := range map[string]digest.Digest{
		"multi:latest":  testupstream.Digest(t, multi),
		"org/ociapp:v1": testupstream.Digest(t, oci),
		"alpine:3.20":   testupstream.Digest(t, schema2),
	} {
		d.Pull(t, ref)
		if got := d.RepoDigest(t, ref); got != want.String() {
			t.Errorf("docker pull %s offline: %s, want %s", ref, got, want)
		}
	}
	for _, c := range []struct {
		ref, arch string
		want      digest.Digest
	}{
		{"docker.io/library/multi:latest", "arm64", children["arm64"]},
		{"docker.io/org/ociapp:v1", "", testupstream.Digest(t, oci)},
		{"docker.io/library/alpine:3.20", "", testupstream.Digest(t, schema2)},
	} {
		got, err := skopeoCopyDir(t, m.host, c.ref, c.arch)
		if err != nil {
			t.Errorf("skopeo copy %s offline: %v", c.ref, err)
		} else if got != c.want {
			t.Errorf("skopeo copy %s offline: %s, want %s", c.ref, got, c.want)
		}
	}
	if _, err := skopeoCopyDir(t, m.host, "docker.io/library/multi:latest", "s390x"); err == nil {
		t.Error("skopeo copied the platform that was never preloaded")
	}
	resp, body := get(t, http.MethodGet, m.url+"/v2/library/multi/manifests/"+children["s390x"].String())
	wantWireError(t, resp, body, http.StatusNotFound, "MANIFEST_UNKNOWN")
	verifyBlobFiles(t, dst)
}

// TestPreloadThroughRunningServer: with a server on the data dir, preload
// pulls through it and the pins land in it.
func TestPreloadThroughRunningServer(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomOCIImage(t, "org/app", "v2", 2, 16<<10)
	m := startMirror(t, up)
	conf := writeTestConfig(t, m.cfg.DataDir, up.URL())
	out := runCLI(t, "preload", "--config", conf, "--server", m.url, "org/app:v2")
	if !strings.Contains(out, "preloaded 1 of 1 images into "+m.url) {
		t.Fatalf("preload output:\n%s", out)
	}
	imgs, err := adminClient(t, m).Images(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, im := range imgs {
		if im.Ref == "docker.io/org/app:v2" {
			found = im.Pinned && im.Digest == testupstream.Digest(t, img)
		}
	}
	if !found {
		t.Fatalf("docker.io/org/app:v2 not pinned in the running server: %+v", imgs)
	}
	u, err := adminClient(t, m).Usage(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if u.PinnedBlobs != 4 { // manifest, config, two layers
		t.Errorf("pinned blobs %d, want 4", u.PinnedBlobs)
	}
	// Export streams from the running server's cache; import refuses to
	// write under it.
	site := filepath.Join(t.TempDir(), "site.tar")
	out = runCLI(t, "export", "--config", conf, "--server", m.url, "--out", site, "org/app:v2")
	if !strings.Contains(out, "1 images, 4 blobs") || !strings.Contains(out, "from "+m.url) {
		t.Errorf("export through the server:\n%s", out)
	}
	if got, want := skopeoInspectArchive(t, site, "docker.io/org/app:v2"), testupstream.Digest(t, img).String(); got != want {
		t.Errorf("skopeo inspect of the export: %s, want %s", got, want)
	}
	if _, err := runCLIErr("import", "--config", conf, site); err == nil || !strings.Contains(err.Error(), "stop it") {
		t.Errorf("import into a busy data dir: %v", err)
	}
	// A missing image fails alone; the exit status says so.
	out, err = runCLIErr("preload", "--config", conf, "--server", m.url, "org/app:v2", "org/nope:v1")
	if err == nil || !strings.Contains(out, "FAILED  docker.io/org/nope:v1") || !strings.Contains(out, "preloaded 1 of 2") {
		t.Errorf("preload with a missing image: err %v\n%s", err, out)
	}
}

// TestOfflineMissNeverDials: offline, a miss answers 404 with the offline
// detail at once, and the upstream address is never connected to.
func TestOfflineMissNeverDials(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepts atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			c.Close()
		}
	}()
	m := startMirror(t, nil, func(c *config) {
		c.registry(dockerHubName).URL = "http://" + ln.Addr().String()
		c.Offline = true
	})
	d := "sha256:" + strings.Repeat("ab", 32)
	for _, c := range []struct{ path, code string }{
		{"/v2/library/alpine/manifests/latest", "MANIFEST_UNKNOWN"},
		{"/v2/library/alpine/manifests/" + d, "MANIFEST_UNKNOWN"},
		{"/v2/library/alpine/blobs/" + d, "BLOB_UNKNOWN"},
		{"/v2/library/alpine/referrers/" + d, "MANIFEST_UNKNOWN"},
	} {
		start := time.Now()
		resp, body := get(t, http.MethodGet, m.url+c.path)
		if el := time.Since(start); el > time.Second {
			t.Errorf("%s took %v offline", c.path, el)
		}
		wantWireError(t, resp, body, http.StatusNotFound, c.code)
		if !strings.Contains(string(body), "offline") {
			t.Errorf("%s: detail does not say the mirror is offline: %s", c.path, body)
		}
	}
	if n := accepts.Load(); n != 0 {
		t.Fatalf("offline mirror connected to upstream %d times", n)
	}
}

// runCLIErr runs regmirror with args and returns its output and error.
func runCLIErr(args ...string) (string, error) {
	var out bytes.Buffer
	err := newCLI(&out, &out).Run(append([]string{"regmirror"}, args...))
	return out.String(), err
}

func runCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runCLIErr(args...)
	if err != nil {
		t.Fatalf("regmirror %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// writeTestConfig writes a config with dataDir and the test upstream as
// docker.io.
func writeTestConfig(t testing.TB, dataDir, upstreamURL string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "regmirror.toml")
	conf := fmt.Sprintf("data_dir = %q\nlog_level = \"warn\"\n\n[[registry]]\nname = \"docker.io\"\nurl = %q\n", dataDir, upstreamURL)
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// childDigests maps each architecture of idx to its manifest digest.
func childDigests(t *testing.T, idx v1.ImageIndex) map[string]digest.Digest {
	t.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]digest.Digest{}
	for _, m := range im.Manifests {
		out[m.Platform.Architecture] = digest.Digest(m.Digest.String())
	}
	return out
}

// cacheState describes a data dir's blobs, tags and pins, for comparing.
func cacheState(t *testing.T, dir string) string {
	t.Helper()
	st, err := cache.Open(cache.Options{Dir: dir, Logger: testlog.ForTest(t, "warn")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var parts []string
	st.Walk(func(info cache.BlobInfo) error {
		parts = append(parts, "blob "+info.Digest.String())
		return nil
	})
	st.Tags(func(registry, repo, tag string, rec cache.TagRecord) error {
		parts = append(parts, "tag "+registry+"/"+repo+":"+tag+"="+rec.Digest.String())
		return nil
	})
	st.Pins(func(name string, ds []digest.Digest) error {
		parts = append(parts, fmt.Sprintf("pin %s %d", name, len(ds)))
		return nil
	})
	files := blobFiles(t, dir)
	for f := range files {
		parts = append(parts, "file "+f)
	}
	sort.Strings(parts)
	return strings.Join(parts, "\n")
}

// skopeoEnvFor is a clean environment for skopeo: no host credentials or
// registries.conf.
func skopeoEnvFor(t *testing.T) []string {
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_RUNTIME_DIR=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "PATH=" + os.Getenv("PATH")}
	return env
}

// skopeoInspectArchive returns the digest skopeo reads for ref in an OCI
// archive.
func skopeoInspectArchive(t *testing.T, archivePath, ref string) string {
	t.Helper()
	bin := realclient.Require(t, "skopeo")
	cmd := exec.Command(bin, "inspect", "--format", "{{.Digest}}", "oci-archive:"+archivePath+":"+ref)
	cmd.Env = skopeoEnvFor(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// skopeoCopyDir copies ref through the mirror at host into a dir: layout
// (which keeps the manifest as served, Docker schema 2 included) and
// returns the digest of the manifest copied; arch, if set, chooses the
// platform of an index.
func skopeoCopyDir(t *testing.T, host, ref, arch string) (digest.Digest, error) {
	t.Helper()
	bin := realclient.Require(t, "skopeo")
	conf := realclient.WriteRegistriesConf(t, realclient.Mirror("docker.io", host))
	policy := filepath.Join(t.TempDir(), "policy.json")
	os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644)
	dest := t.TempDir()
	args := []string{"--registries-conf", conf, "--policy", policy, "--tmpdir", t.TempDir()}
	if arch != "" {
		args = append(args, "--override-os", "linux", "--override-arch", arch)
	}
	args = append(args, "copy", "--retry-times", "0", "--src-no-creds", "docker://"+ref, "dir:"+dest)
	cmd := exec.Command(bin, args...)
	cmd.Env = skopeoEnvFor(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(dest, "manifest.json"))
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(raw)
	return digest.Digest("sha256:" + hex.EncodeToString(h[:])), nil
}

// BenchmarkAirGap times preload, export and import of three images that
// share a base (two layers) and add one layer each, and reports the
// archive's size against the distinct blobs it holds and the sum over the
// images. Layers are REGMIRROR_AIRGAP_MIB MiB each (default 2), e.g.
//
//	REGMIRROR_AIRGAP_MIB=25 go test -run '^$' -bench BenchmarkAirGap -benchtime 3x .
func BenchmarkAirGap(b *testing.B) {
	mib := 2
	if v, err := strconv.Atoi(os.Getenv("REGMIRROR_AIRGAP_MIB")); err == nil && v > 0 {
		mib = v
	}
	size := int64(mib) << 20
	up := testupstream.Start(b)
	base := up.PushRandomImage(b, "org/base", "v1", 2, size)
	perImage := imageBytes(b, base)
	for _, name := range []string{"org/app1", "org/app2"} {
		l, err := random.Layer(size, types.DockerLayer)
		if err != nil {
			b.Fatal(err)
		}
		img, err := mutate.AppendLayers(base, l)
		if err != nil {
			b.Fatal(err)
		}
		up.Push(b, name, "v1", img)
		perImage += imageBytes(b, img)
	}
	refs := []string{"org/base:v1", "org/app1:v1", "org/app2:v1"}
	var preload, export, imp time.Duration
	timed := func(sum *time.Duration, args ...string) {
		start := time.Now()
		runCLI(b, args...)
		*sum += time.Since(start)
	}
	var archive, unique int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		src, dst := b.TempDir(), b.TempDir()
		conf := writeTestConfig(b, src, up.URL())
		site := filepath.Join(b.TempDir(), "site.tar")
		timed(&preload, append([]string{"preload", "--config", conf}, refs...)...)
		timed(&export, "export", "--config", conf, "--out", site, "--all")
		timed(&imp, "import", "--config", writeTestConfig(b, dst, up.URL()), site)
		fi, err := os.Stat(site)
		if err != nil {
			b.Fatal(err)
		}
		archive, unique = fi.Size(), 0
		for f := range blobFiles(b, dst) {
			st, err := os.Stat(filepath.Join(dst, "blobs", "sha256", f[:2], f))
			if err != nil {
				b.Fatal(err)
			}
			unique += st.Size()
		}
	}
	perOp := func(d time.Duration) float64 { return float64(d.Milliseconds()) / float64(b.N) }
	b.ReportMetric(perOp(preload), "preload-ms/op")
	b.ReportMetric(perOp(export), "export-ms/op")
	b.ReportMetric(perOp(imp), "import-ms/op")
	b.ReportMetric(float64(archive), "archive-B")
	b.ReportMetric(float64(unique), "distinct-blobs-B")
	b.ReportMetric(float64(perImage), "sum-over-images-B")
	b.ReportMetric(100*float64(archive-unique)/float64(unique), "overhead-%")
}

// imageBytes sums an image's manifest, config and layers.
func imageBytes(t testing.TB, img v1.Image) int64 {
	t.Helper()
	m, _ := img.RawManifest()
	c, _ := img.RawConfigFile()
	n := int64(len(m) + len(c))
	layers, _ := img.Layers()
	for _, l := range layers {
		s, _ := l.Size()
		n += s
	}
	return n
}

// TestPreloadReferrers: with an upstream that has the referrers API,
// preload fetches and pins an image's referrers, and an offline mirror
// answers the referrers request from the cache.
func TestPreloadReferrers(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	repo, err := name.NewRepository(host+"/org/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(repo.Tag("v1"), img); err != nil {
		t.Fatal(err)
	}
	desc, err := partial.Descriptor(img)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	sig = mutate.Subject(mutate.MediaType(sig, types.OCIManifestSchema1), *desc).(v1.Image)
	sigDigest, _ := sig.Digest()
	if err := remote.Write(repo.Digest(sigDigest.String()), sig); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	conf := writeTestConfig(t, dir, srv.URL)
	runCLI(t, "preload", "--config", conf, "org/app:v1")
	pinned := cacheState(t, dir)
	if !strings.Contains(pinned, "blob "+sigDigest.String()) || !strings.Contains(pinned, "pin docker.io/org/app:v1 6") {
		t.Fatalf("referrer not preloaded and pinned:\n%s", pinned)
	}
	srv.Close()
	m := startMirror(t, nil, func(c *config) {
		c.DataDir = dir
		c.registry(dockerHubName).URL = srv.URL
		c.Offline = true
	})
	resp, body := get(t, http.MethodGet, m.url+"/v2/org/app/referrers/"+desc.Digest.String())
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), sigDigest.String()) {
		t.Fatalf("offline referrers: %d %s", resp.StatusCode, body)
	}
	resp, body = get(t, http.MethodGet, m.url+"/v2/org/app/referrers/"+desc.Digest.String()+"?artifactType=application/x-none")
	if resp.StatusCode != http.StatusOK || strings.Contains(string(body), sigDigest.String()) || resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered referrers: %d %v %s", resp.StatusCode, resp.Header, body)
	}
}

// TestPreloadLeavesTheWatchAndPinListsToServe: preload on a free data dir
// pulls through a mirror it starts for itself, which fetches what the
// command names and nothing else: not the config's watch list or pin
// list, which are serve's (and would spend upstream's pull budget).
func TestPreloadLeavesTheWatchAndPinListsToServe(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/alpine", "latest", 1, 1000)
	up.PushRandomImage(t, "library/watched", "latest", 1, 1000)
	up.PushRandomImage(t, "library/pinned", "latest", 1, 1000)
	conf := writeTestConfig(t, filepath.Join(t.TempDir(), "data"), up.URL())
	body, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	body = append([]byte("pin = [\"pinned:latest\"]\n"), body...)
	body = append(body, []byte("\n[[watch]]\nimages = [\"watched:latest\"]\n")...)
	if err := os.WriteFile(conf, body, 0o644); err != nil {
		t.Fatal(err)
	}
	up.Reset() // the pushes' own requests
	runCLI(t, "preload", "--config", conf, "alpine:latest")
	for _, repo := range []string{"library/watched", "library/pinned"} {
		if n := up.Count(http.MethodGet, "/v2/"+repo+"/manifests/latest") + up.Count(http.MethodHead, "/v2/"+repo+"/manifests/latest"); n != 0 {
			t.Errorf("preload asked upstream for %s %d times", repo, n)
		}
	}
}
