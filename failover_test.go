package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testupstream"
)

// startWithMirror runs regmirror with docker.io at url = up and one
// mirror, hub, tried first.
func startWithMirror(t *testing.T, up, hub *testupstream.Server, mutate ...func(*config)) *mirror {
	t.Helper()
	return startMirror(t, up, append([]func(*config){func(c *config) {
		c.registry(dockerHubName).Mirrors = []mirrorConfig{{URL: hub.URL()}}
	}}, mutate...)...)
}

// imageRequests counts the registry requests an upstream saw for img: its
// manifest HEADs and GETs and the GETs of its config and layers.
func imageRequests(t *testing.T, up *testupstream.Server, img v1.Image) int {
	t.Helper()
	n := up.ManifestRequests(http.MethodHead) + up.ManifestRequests(http.MethodGet)
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	n += up.BlobGETs(digest.Digest(cfg.String()))
	for _, d := range testupstream.LayerDigests(t, img) {
		n += up.BlobGETs(d)
	}
	return n
}

// TestFailoverMirrorUp: with the mirror answering, the registry's own URL
// gets no request at all (not even a token).
func TestFailoverMirrorUp(t *testing.T) {
	up, hub := testupstream.Start(t), testupstream.Start(t)
	img := up.PushRandomImage(t, "library/app", "1", 2, 4096)
	hub.Push(t, "library/app", "1", img)
	up.Reset() // the pushes' own requests
	hub.Reset()
	m := startWithMirror(t, up, hub, func(c *config) { c.TagTTL = duration{time.Nanosecond} })
	for i := 0; i < 2; i++ { // the second pull revalidates the tag (HEAD)
		if got := pullAll(t, m, "library/app:1"); got != testupstream.Digest(t, img) {
			t.Fatalf("pull %d: %s", i, got)
		}
	}
	if n := imageRequests(t, up, img) + up.TokenRequests(); n != 0 {
		t.Errorf("the registry's url got %d requests while its mirror answered", n)
	}
	if n := imageRequests(t, hub, img); n == 0 {
		t.Error("the mirror was not asked")
	}
	verifyBlobFiles(t, m.cfg.DataDir)
}

// TestFailoverMirrorDown: a mirror that is down is skipped (and marked out:
// asked once, not for every blob), one that lacks an image (404) is
// skipped, and the registry's url serves.
func TestFailoverMirrorDown(t *testing.T) {
	up, hub := testupstream.Start(t), testupstream.Start(t)
	img := up.PushRandomImage(t, "library/app", "1", 3, 4096)
	hub.Push(t, "library/app", "1", img)
	up.Reset() // the pushes' own requests
	hub.Reset()
	m := startWithMirror(t, up, hub, func(c *config) { c.Server.OutageBackoff = duration{time.Hour} })

	hub.SetDown(true)
	if got := pullAll(t, m, "library/app:1"); got != testupstream.Digest(t, img) {
		t.Fatalf("pull with the mirror down: %s", got)
	}
	if n := imageRequests(t, hub, img) + hub.Count(http.MethodGet, "/v2/"); n != 1 {
		t.Errorf("the mirror that is down was asked %d times, want once (then marked out)", n)
	}
	if n := imageRequests(t, up, img); n == 0 {
		t.Error("the registry's url did not serve")
	}
	verifyBlobFiles(t, m.cfg.DataDir)

	// A mirror that answers but lacks the image.
	up2, hub2 := testupstream.Start(t), testupstream.Start(t)
	only := up2.PushRandomImage(t, "library/only-upstream", "1", 1, 2048)
	m2 := startWithMirror(t, up2, hub2)
	if got := pullAll(t, m2, "library/only-upstream:1"); got != testupstream.Digest(t, only) {
		t.Fatalf("pull of an image the mirror lacks: %s", got)
	}
	if n := hub2.Count(http.MethodGet, "/v2/library/only-upstream/manifests/1"); n != 1 {
		t.Errorf("the mirror was asked %d times for the tag, want once", n)
	}
}

// TestFailoverMirrorCorrupt: a mirror serving wrong bytes for a digest is
// refused (no client gets the whole wrong body, nothing is cached) and the
// next fill of that digest comes from the next source.
func TestFailoverMirrorCorrupt(t *testing.T) {
	const size = 1 << 20
	up, hub := testupstream.Start(t), testupstream.Start(t)
	_, big := up.PushLargeBlobImage(t, "library/big", "latest", size)
	if _, d := hub.PushLargeBlobImage(t, "library/big", "latest", size); d != big {
		t.Fatalf("the two upstreams hold different blobs: %s, %s", big, d)
	}
	m := startWithMirror(t, up, hub)
	hub.CorruptBlobs(true)
	url := m.url + "/v2/library/big/blobs/" + big.String()

	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode == 200 && len(body) == size {
		t.Fatalf("the client received a whole body from a corrupting mirror (digest %s)", digest.FromBytes(body))
	}
	eventually(t, "the failed fill to clean up", func() bool { return len(tmpFiles(t, m.cfg.DataDir)) == 0 })
	if blobFiles(t, m.cfg.DataDir)[big.Encoded()] {
		t.Fatal("corrupt content was cached")
	}

	// The client retries: the next source (the registry's url) serves it.
	resp2, body := get(t, http.MethodGet, url)
	if resp2.StatusCode != 200 || digest.FromBytes(body) != big {
		t.Fatalf("retry: %d, digest %s", resp2.StatusCode, digest.FromBytes(body))
	}
	if n := hub.BlobGETs(big); n != 1 {
		t.Errorf("the corrupting mirror was asked %d times for the blob, want once", n)
	}
	if n := up.BlobGETs(big); n != 1 {
		t.Errorf("the registry's url was asked %d times for the blob, want once", n)
	}
	verifyBlobFiles(t, m.cfg.DataDir)
}

// TestFailoverMirrorCredentials: a mirror's own credentials (a table entry,
// password from the environment) are used for it; the registry's are not.
func TestFailoverMirrorCredentials(t *testing.T) {
	up := testupstream.Start(t, testupstream.WithCredentials("hubuser", "hubpass"))
	hub := testupstream.Start(t, testupstream.WithCredentials("mirroruser", "mirrorpass"))
	img := up.PushRandomImage(t, "library/app", "1", 1, 1024)
	hub.Push(t, "library/app", "1", img)
	up.Reset()
	t.Setenv("TEST_MIRROR_PASSWORD", "mirrorpass")
	m := startMirror(t, up, func(c *config) {
		r := c.registry(dockerHubName)
		r.Username, r.Password = "hubuser", "hubpass"
		r.Mirrors = []mirrorConfig{{URL: hub.URL(), endpointAuth: endpointAuth{Username: "mirroruser", PasswordEnv: "TEST_MIRROR_PASSWORD"}}}
	})
	if got := pullAll(t, m, "library/app:1"); got != testupstream.Digest(t, img) {
		t.Fatalf("pull: %s", got)
	}
	if n := imageRequests(t, up, img) + up.TokenRequests(); n != 0 {
		t.Errorf("the registry's url got %d requests while its mirror answered", n)
	}
}

// TestMirrorConfig: mirrors are URL strings or tables with their own
// credentials; typos and bad URLs are errors.
func TestMirrorConfig(t *testing.T) {
	dir := t.TempDir()
	load := func(content string) (config, error) {
		path := dir + "/c.toml"
		writeFile(t, path, content)
		c := defaultConfig()
		c.DataDir = dir
		if err := loadConfigFile(&c, path); err != nil {
			return c, err
		}
		return c, c.finish()
	}
	t.Setenv("TEST_MIRROR_PW", "secret")
	c, err := load(`[[registry]]
name = "docker.io"
mirrors = ["https://mirror.gcr.io", { url = "https://hub.corp.example", username = "u", password_env = "TEST_MIRROR_PW" }]
`)
	if err != nil {
		t.Fatal(err)
	}
	ms := c.registry(dockerHubName).Mirrors
	if len(ms) != 2 || ms[0].URL != "https://mirror.gcr.io" || ms[1].Username != "u" || ms[1].Password != "secret" {
		t.Errorf("mirrors: %+v", ms)
	}
	for _, bad := range []struct{ toml, want string }{
		{"[[registry]]\nname = \"docker.io\"\nmirrors = [{ url = \"https://m.example\", usernme = \"u\" }]\n", `unknown key "usernme"`},
		{"[[registry]]\nname = \"docker.io\"\nmirrors = [\"https://m.example/path\"]\n", "want http(s)://host[:port]"},
		{"[[registry]]\nname = \"docker.io\"\nmirrors = [\"mirror.gcr.io\"]\n", "want http(s)://host[:port]"},
		{"[[registry]]\nname = \"docker.io\"\nmirrors = [{ url = \"https://m.example\", password = \"p\" }]\n", "a password needs a username"},
		{"[[registry]]\nname = \"docker.io\"\nmirrors = [\"https://registry-1.docker.io\"]\n", "listed twice"},
		{"[[registry]]\nname = \"docker.io\"\nmirrors = [3]\n", "want a URL string or a table"},
	} {
		if _, err := load(bad.toml); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: err = %v, want one about %q", bad.toml, err, bad.want)
		}
	}
}
