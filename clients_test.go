package main

import (
	"net/http"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/regmirror/regmirror/internal/realclient"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// TestDockerDaemonPullsThroughMirror: a private dockerd with
// --registry-mirror pointing at regmirror pulls Docker Hub names (which
// cannot reach the internet here, so they must come through the mirror).
// A second daemon's pull is served from the mirror's cache.
func TestDockerDaemonPullsThroughMirror(t *testing.T) {
	up := testupstream.Start(t)
	alpine := up.PushRandomImage(t, "library/alpine", "latest", 2, 64<<10)
	multi := up.PushRandomManifestList(t, "library/multi", "1.0",
		[]v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}, 2, 32<<10)
	m := startMirror(t, up)

	d := realclient.StartDockerd(t, m.url)
	d.Pull(t, "alpine")
	if got, want := d.RepoDigest(t, "alpine"), testupstream.Digest(t, alpine).String(); got != want {
		t.Fatalf("docker pull alpine: repo digest %s, want %s", got, want)
	}
	d.Pull(t, "multi:1.0")
	if got, want := d.RepoDigest(t, "multi:1.0"), testupstream.Digest(t, multi).String(); got != want {
		t.Fatalf("docker pull multi:1.0: repo digest %s, want %s", got, want)
	}
	blobGETs := totalBlobGETs(t, up, m)
	manifestGETs := up.ManifestRequests(http.MethodGet)

	d.Remove(t, "alpine")
	d.Pull(t, "alpine")
	if got := totalBlobGETs(t, up, m); got != blobGETs {
		t.Errorf("a second docker pull fetched blobs upstream (%d GETs, was %d)", got, blobGETs)
	}
	if got := up.ManifestRequests(http.MethodGet); got != manifestGETs {
		t.Errorf("a second docker pull fetched manifests upstream (%d GETs, was %d)", got, manifestGETs)
	}
	verifyBlobFiles(t, m.cfg.DataDir)
}

// TestSkopeoCopiesThroughMirror: skopeo with a registries.conf mirror entry.
func TestSkopeoCopiesThroughMirror(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomOCIImage(t, "library/alpine", "3.20", 2, 16<<10)
	idx := up.PushRandomIndex(t, "org/app", "v1",
		[]v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}, 1, 8<<10)
	m := startMirror(t, up)

	if got, want := realclient.SkopeoCopy(t, m.host, "docker.io/library/alpine:3.20", t.TempDir()), testupstream.Digest(t, img).String(); got != want {
		t.Errorf("skopeo copy alpine:3.20: %s, want %s", got, want)
	}
	if got, want := realclient.SkopeoCopy(t, m.host, "docker.io/org/app:v1", t.TempDir()), testupstream.Digest(t, idx).String(); got != want {
		t.Errorf("skopeo copy --all org/app:v1: %s, want %s", got, want)
	}
	verifyBlobFiles(t, m.cfg.DataDir)
}
