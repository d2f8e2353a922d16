package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/realclient"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// TestImportPrintsEachImageOnce (issue 9 item 7): at the default log
// level, import names each image on one line, not also in a "pinned" log
// line of the cache's management.
func TestImportPrintsEachImageOnce(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomOCIImage(t, "org/one", "v1", 1, 4<<10)
	up.PushRandomImage(t, "org/two", "v1", 1, 4<<10)
	src := t.TempDir()
	conf := writeTestConfig(t, src, up.URL())
	runCLI(t, "preload", "--config", conf, "org/one:v1", "org/two:v1")
	site := filepath.Join(t.TempDir(), "site.tar")
	runCLI(t, "export", "--config", conf, "--out", site, "--all")

	dst := t.TempDir()
	out := runCLI(t, "import", "--config", writeTestConfig(t, dst, up.URL()), "--log-level", "info", site)
	for _, ref := range []string{"docker.io/org/one:v1", "docker.io/org/two:v1"} {
		if n := strings.Count(out, ref); n != 1 {
			t.Errorf("import output names %s %d times, want once:\n%s", ref, n, out)
		}
	}
}

// TestExportReaders (issue 9 item 8): what reads an export. regmirror
// import reads every image; go-containerregistry's layout package (what
// crane reads an OCI layout with) reads every image; skopeo's
// oci-archive: transport finds the OCI-media-type image and does not
// find the Docker schema 2 one (containers/image issue 2577), as the
// README says.
func TestExportReaders(t *testing.T) {
	up := testupstream.Start(t)
	oci := up.PushRandomOCIImage(t, "org/ociapp", "v1", 1, 4<<10)
	schema2 := up.PushRandomImage(t, "library/alpine", "3.20", 1, 4<<10)
	src := t.TempDir()
	conf := writeTestConfig(t, src, up.URL())
	runCLI(t, "preload", "--config", conf, "org/ociapp:v1", "alpine:3.20")
	site := filepath.Join(t.TempDir(), "site.tar")
	runCLI(t, "export", "--config", conf, "--out", site, "--all")
	want := map[string]digest.Digest{
		"docker.io/org/ociapp:v1":       testupstream.Digest(t, oci),
		"docker.io/library/alpine:3.20": testupstream.Digest(t, schema2),
	}

	// go-containerregistry's layout (crane): untar, read index.json.
	dir := t.TempDir()
	if out, err := exec.Command("tar", "-xf", site, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]digest.Digest{}
	for _, m := range im.Manifests {
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatalf("layout: image %s: %v", m.Digest, err)
		}
		if _, err := img.Layers(); err != nil {
			t.Fatal(err)
		}
		got[m.Annotations["org.opencontainers.image.ref.name"]] = digest.Digest(m.Digest.String())
	}
	for ref, d := range want {
		if got[ref] != d {
			t.Errorf("layout reads %s as %s, want %s", ref, got[ref], d)
		}
	}

	// skopeo: the OCI image yes, the Docker schema 2 image no.
	if got := skopeoInspectArchive(t, site, "docker.io/org/ociapp:v1"); got != want["docker.io/org/ociapp:v1"].String() {
		t.Errorf("skopeo inspect oci-archive of the OCI image: %s, want %s", got, want["docker.io/org/ociapp:v1"])
	}
	bin := realclient.Require(t, "skopeo")
	cmd := exec.Command(bin, "inspect", "oci-archive:"+site+":docker.io/library/alpine:3.20")
	cmd.Env = skopeoEnvFor(t)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("skopeo now reads the Docker schema 2 image of an OCI archive; update the README:\n%s", out)
	}

	// regmirror import: both.
	dst := t.TempDir()
	out := runCLI(t, "import", "--config", writeTestConfig(t, dst, up.URL()), site)
	if !strings.Contains(out, "2 images") {
		t.Fatalf("import:\n%s", out)
	}
}

// TestPushToSiteRegistry (issue 9 item 8): push-to copies cached images
// (a partially cached multi-platform index, an OCI image, a Docker schema
// 2 image, one pinned by digest) into a registry that wants credentials
// (internal/testupstream: go-containerregistry's registry behind its
// token server), and the registry then serves exactly the cache's
// digests, for the whole graph.
func TestPushToSiteRegistry(t *testing.T) {
	up := testupstream.Start(t)
	plats := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "s390x"}}
	multi := up.PushRandomIndex(t, "library/multi", "latest", plats, 1, 8<<10)
	oci := up.PushRandomOCIImage(t, "org/ociapp", "v1", 2, 8<<10)
	schema2 := up.PushRandomImage(t, "library/alpine", "3.20", 2, 8<<10)
	pinned := up.PushRandomImage(t, "org/bydigest", "v1", 1, 8<<10)
	pinnedRef := "org/bydigest@" + testupstream.Digest(t, pinned).String()
	src := t.TempDir()
	conf := writeTestConfig(t, src, up.URL())
	runCLI(t, "preload", "--config", conf, "--platform", "linux/amd64", "multi:latest", "org/ociapp:v1", "alpine:3.20", pinnedRef)

	site := testupstream.Start(t, testupstream.WithCredentials("ops", "s3cret"))
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	// Without credentials the site registry refuses, and push-to says so.
	out, err := runCLIErr("push-to", "--config", conf, site.URL(), "org/ociapp:v1")
	if err == nil || !strings.Contains(out, "FAILED  docker.io/org/ociapp:v1") {
		t.Fatalf("push-to without credentials: err %v\n%s", err, out)
	}
	// The index of which one platform is cached cannot be pushed with its
	// digest; push-to says so and pushes the others.
	out, err = runCLIErr("push-to", "--config", conf, "--to-username", "ops", "--to-password-file", pw, "--all", site.URL())
	if err == nil || !strings.Contains(out, "FAILED  docker.io/library/multi:latest: partially cached index: 1 platforms") ||
		!strings.Contains(out, "pushed 3 of 4 images") {
		t.Fatalf("push-to with a partially cached index: err %v\n%s", err, out)
	}
	if site.Count(http.MethodPut, "/v2/library/multi/manifests/latest") != 0 {
		t.Error("push-to sent the partial index")
	}
	runCLI(t, "preload", "--config", conf, "--all-platforms", "multi:latest")
	out = runCLI(t, "push-to", "--config", conf, "--to-username", "ops", "--to-password-file", pw, "--all", site.URL())
	if !strings.Contains(out, "pushed 4 of 4 images") {
		t.Fatalf("push-to output:\n%s", out)
	}
	auth := remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: "ops", Password: "s3cret"}))
	for ref, want := range map[string]digest.Digest{
		"library/multi:latest": testupstream.Digest(t, multi),
		"org/ociapp:v1":        testupstream.Digest(t, oci),
		"library/alpine:3.20":  testupstream.Digest(t, schema2),
		pinnedRef:              testupstream.Digest(t, pinned),
	} {
		desc, err := remote.Get(mustRef(t, site.Host()+"/"+ref), auth)
		if err != nil {
			t.Errorf("%s on the site registry: %v", ref, err)
			continue
		}
		if got := digest.Digest(desc.Digest.String()); got != want {
			t.Errorf("%s on the site registry: %s, want %s", ref, got, want)
		}
	}
	// Every blob of a platform arrived with its digest.
	children := childDigests(t, multi)
	amd, err := remote.Image(mustRef(t, site.Host()+"/library/multi@"+children["amd64"].String()), auth)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := amd.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, _ := l.Digest()
		rc, err := l.Compressed() // remote verifies the digest as it reads
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rc.Read(make([]byte, 1)); err != nil {
			t.Errorf("layer %s: %v", d, err)
		}
		rc.Close()
	}
	// A second run finds every blob there and uploads none again.
	uploads := func() int { return site.Count(http.MethodPost, "/v2/org/ociapp/blobs/uploads/") }
	before := uploads()
	if before == 0 {
		t.Fatal("no uploads counted: the test does not see them")
	}
	runCLI(t, "push-to", "--config", conf, "--to-username", "ops", "--to-password-file", pw, site.URL(), "org/ociapp:v1")
	if n := uploads() - before; n != 0 {
		t.Errorf("a second push-to uploaded %d blobs again", n)
	}
}
func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
