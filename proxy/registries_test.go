package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/realclient"
	"github.com/regmirror/regmirror/internal/testpull"
	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/upstream"
)

// Names the multi-registry mirror is configured with.
const (
	ghcrName = "ghcr.io"
	corpName = "registry.corp:5000" // private, with credentials
	corpUser = "mirror"
	corpPass = "s3cret"
	// ghcrAlias is a Host header that means ghcr.io.
	ghcrAlias = "ghcr.mirror.test"
)

// registries is one mirror in front of three fake registries: Docker Hub
// (the default), ghcr.io (with a Host alias) and a private
// registry.corp:5000 with credentials, reached through a
// testupstream.RepoFront.
type registries struct {
	hub, ghcr, corp *testupstream.Server
	front           *testupstream.RepoFront
	m               *testMirror
	setup           []func(*mirrorSetup)
}

func startRegistries(t *testing.T, mutate ...func(*mirrorSetup)) *registries {
	t.Helper()
	r := &registries{
		hub:  testupstream.Start(t),
		ghcr: testupstream.Start(t),
		corp: testupstream.Start(t, testupstream.WithCredentials(corpUser, corpPass)),
	}
	r.front = testupstream.StartRepoFront(t, r.corp)
	r.setup = append([]func(*mirrorSetup){func(c *mirrorSetup) {
		c.Upstreams = append(c.Upstreams,
			upstream.Options{Name: ghcrName, URL: r.ghcr.URL()},
			upstream.Options{Name: corpName, URL: r.front.URL, Username: corpUser, Password: corpPass},
		)
		c.HostAliases = map[string]string{ghcrAlias: ghcrName}
		c.PrivateRegistries = map[string]bool{corpName: true}
	}}, mutate...)
	r.m = startMirror(t, r.hub, r.setup...)
	return r
}

// restart stops the mirror and starts it again on the same cache, changed
// by mutate.
func (r *registries) restart(t *testing.T, mutate ...func(*mirrorSetup)) {
	t.Helper()
	r.m.stop()
	dir := r.m.dataDir
	setup := append(append([]func(*mirrorSetup){}, r.setup...), func(c *mirrorSetup) { c.DataDir = dir })
	r.m = startMirror(t, r.hub, append(setup, mutate...)...)
}

// wantRegistryError checks a registry JSON error answer.
func wantRegistryError(t *testing.T, what string, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.Request.Method == http.MethodHead { // no body to check
		if resp.StatusCode != status {
			t.Errorf("%s: status %d, want %d", what, resp.StatusCode, status)
		}
		return
	}
	wantJSONError(t, what, resp, body, status, code)
}

// TestRegistryAddressing: one mirror serves several registries, named the
// way each client names them: ?ns= (containerd), a path prefix (podman,
// skopeo, containerd override_path), a Host alias, or nothing (the default,
// docker.io, as the Docker daemon sends it). /v2/ answers for every form.
func TestRegistryAddressing(t *testing.T) {
	r := startRegistries(t)
	hubImg := r.hub.PushRandomImage(t, "library/alpine", "latest", 2, 4096)
	ghcrImg := r.ghcr.PushRandomOCIImage(t, "org/app", "v1", 2, 4096)
	ghcrIdx := r.ghcr.PushRandomIndex(t, "org/multi", "v2",
		[]v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}, 1, 2048)
	m := r.m

	for _, c := range []struct {
		ref  string
		want digest.Digest
	}{
		{"alpine:latest", testupstream.Digest(t, hubImg)},
		{"docker.io/library/alpine:latest", testupstream.Digest(t, hubImg)},
		{"index.docker.io/library/alpine:latest", testupstream.Digest(t, hubImg)},
		{"ghcr.io/org/app:v1", testupstream.Digest(t, ghcrImg)},
		{"ghcr.io/org/multi:v2", testupstream.Digest(t, ghcrIdx)},
	} {
		if got := pullAll(t, m, c.ref); got != c.want {
			t.Errorf("pull %s: %s, want %s", c.ref, got, c.want)
		}
	}

	appDigest := testupstream.Digest(t, ghcrImg)
	layer := testupstream.LayerDigests(t, ghcrImg)[0]
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		for _, c := range []struct{ what, path, host string }{
			{"?ns=", "/v2/org/app/manifests/v1?ns=ghcr.io", ""},
			{"?ns= with the same path prefix (override_path)", "/v2/ghcr.io/org/app/manifests/v1?ns=ghcr.io", ""},
			{"path prefix", "/v2/ghcr.io/org/app/manifests/v1", ""},
			{"path prefix, by digest", "/v2/ghcr.io/org/app/manifests/" + appDigest.String(), ""},
			{"Host alias", "/v2/org/app/manifests/v1", ghcrAlias},
			{"Host alias with port", "/v2/org/app/manifests/v1", ghcrAlias + ":443"},
		} {
			resp, body := do(t, method, m.url+c.path, c.host)
			wantContent(t, method+" "+c.what, resp, body, appDigest)
			if got := resp.Header.Get("Docker-Content-Digest"); got != appDigest.String() {
				t.Errorf("%s %s: Docker-Content-Digest %q, want %s", method, c.what, got, appDigest)
			}
		}
		for _, path := range []string{
			"/v2/org/app/blobs/" + layer.String() + "?ns=ghcr.io",
			"/v2/ghcr.io/org/app/blobs/" + layer.String(),
		} {
			resp, body := do(t, method, m.url+path, "")
			wantContent(t, method+" "+path, resp, body, layer)
		}
	}
	// The tag list of the right registry.
	if resp, body := do(t, http.MethodGet, m.url+"/v2/org/app/tags/list?ns=ghcr.io", ""); resp.StatusCode != 200 || !strings.Contains(string(body), `"v1"`) {
		t.Errorf("tags/list?ns=ghcr.io: %d %s", resp.StatusCode, body)
	}

	for _, c := range []struct{ path, host string }{
		{"/v2/", ""}, {"/v2", ""}, {"/v2/?ns=ghcr.io", ""}, {"/v2/?ns=docker.io", ""},
		{"/v2/?ns=" + url.QueryEscape(corpName), ""}, {"/v2/", ghcrAlias},
	} {
		resp, body := do(t, http.MethodGet, m.url+c.path, c.host)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
			t.Errorf("GET %s (Host %q): %d %s, want 200 with Docker-Distribution-API-Version", c.path, c.host, resp.StatusCode, body)
		}
	}
}

// TestRegistryTagsIsolated: the same repository name and tag on two
// registries are two different images; the cache keys tags and
// repositories by registry. Blobs stay shared by digest: an image on both
// registries is fetched once.
func TestRegistryTagsIsolated(t *testing.T) {
	r := startRegistries(t)
	m := r.m
	hubImg := r.hub.PushRandomImage(t, "org/app", "v1", 1, 2048)
	ghcrImg := r.ghcr.PushRandomImage(t, "org/app", "v1", 1, 2048)
	hubWant, ghcrWant := testupstream.Digest(t, hubImg), testupstream.Digest(t, ghcrImg)
	if hubWant == ghcrWant {
		t.Fatal("random images collided")
	}
	for round := 0; round < 2; round++ { // the second round is served from the cache
		if got := pullAll(t, m, "org/app:v1"); got != hubWant {
			t.Errorf("round %d: docker.io org/app:v1 = %s, want %s", round, got, hubWant)
		}
		if got := pullAll(t, m, "ghcr.io/org/app:v1"); got != ghcrWant {
			t.Errorf("round %d: ghcr.io org/app:v1 = %s, want %s", round, got, ghcrWant)
		}
		for _, c := range []struct {
			path string
			want digest.Digest
		}{
			{"/v2/org/app/manifests/v1?ns=ghcr.io", ghcrWant},
			{"/v2/org/app/manifests/v1?ns=docker.io", hubWant},
			{"/v2/org/app/manifests/v1", hubWant},
		} {
			resp, body := do(t, http.MethodGet, m.url+c.path, "")
			wantContent(t, c.path, resp, body, c.want)
		}
	}
	// Shared content: the same image pushed to both registries is
	// downloaded from the first only.
	img := r.hub.PushRandomImage(t, "team/base", "1", 2, 8192)
	shared := testupstream.Digest(t, img)
	r.ghcr.Push(t, "mirror/base", "1", img)
	pullAll(t, m, "team/base:1")
	ghcrBlobGETs := 0
	for _, l := range testupstream.LayerDigests(t, img) {
		ghcrBlobGETs += r.ghcr.BlobGETs(l)
	}
	if got := pullAll(t, m, "ghcr.io/mirror/base:1"); got != shared {
		t.Errorf("ghcr.io mirror/base:1 = %s, want %s", got, shared)
	}
	for _, l := range testupstream.LayerDigests(t, img) {
		ghcrBlobGETs -= r.ghcr.BlobGETs(l)
	}
	if ghcrBlobGETs != 0 {
		t.Errorf("layers cached from docker.io were fetched again from ghcr.io (%d GETs)", -ghcrBlobGETs)
	}
}

// evilListener counts the connections anyone makes to it.
type evilListener struct {
	ln      net.Listener
	accepts atomic.Int64
}

func startEvil(t *testing.T) *evilListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &evilListener{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepts.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return e
}

// TestUnconfiguredRegistryRefused: a request naming a registry that is not
// configured, in any form, is refused with a registry error and dials
// nothing: the mirror is not an open proxy. A Host header that is not an
// alias means the default registry, never the Host.
func TestUnconfiguredRegistryRefused(t *testing.T) {
	r := startRegistries(t)
	m := r.m
	hubImg := r.hub.PushRandomImage(t, "library/alpine", "latest", 1, 1024)
	evil := startEvil(t)
	host := evil.ln.Addr().String()
	port := host[strings.LastIndexByte(host, ':')+1:]
	d := digest.FromString("x").String()

	for _, evilName := range []string{host, "localhost:" + port, "evil.example:" + port} {
		q := url.QueryEscape(evilName)
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			for _, c := range []struct {
				path   string
				status int
				code   string
			}{
				{"/v2/?ns=" + q, http.StatusForbidden, "DENIED"},
				{"/v2/x/manifests/latest?ns=" + q, http.StatusForbidden, "DENIED"},
				{"/v2/x/blobs/" + d + "?ns=" + q, http.StatusForbidden, "DENIED"},
				{"/v2/x/tags/list?ns=" + q, http.StatusForbidden, "DENIED"},
				{"/v2/ghcr.io/x/manifests/latest?ns=" + q, http.StatusForbidden, "DENIED"},
				{"/v2/" + evilName + "/x/manifests/latest", http.StatusForbidden, "DENIED"},
				{"/v2/" + evilName + "/x/blobs/" + d, http.StatusForbidden, "DENIED"},
				{"/v2/" + evilName + "/x/tags/list", http.StatusForbidden, "DENIED"},
				// ?ns= names the registry; a host-like first component that
				// differs is part of the name, and ':' is not allowed there.
				{"/v2/" + evilName + "/x/manifests/latest?ns=ghcr.io", http.StatusBadRequest, "NAME_INVALID"},
			} {
				resp, body := do(t, method, m.url+c.path, "")
				wantRegistryError(t, method+" "+c.path, resp, body, c.status, c.code)
			}
			// An unknown Host is not a registry: the default answers.
			resp, body := do(t, method, m.url+"/v2/library/alpine/manifests/latest", evilName)
			wantContent(t, method+" with Host "+evilName, resp, body, testupstream.Digest(t, hubImg))
		}
	}
	if n := evil.accepts.Load(); n != 0 {
		t.Fatalf("the mirror connected to an unconfigured registry %d times", n)
	}
}

// TestPrivateRegistryScopesCache: content cached from a private registry is
// served to a repository only if it was fetched for it or upstream confirms
// it there; unconfirmed requests are refused, even while upstream is down.
func TestPrivateRegistryScopesCache(t *testing.T) {
	r := startRegistries(t)
	m := r.m
	img := r.corp.PushRandomImage(t, "team/a", "v1", 2, 4096)
	want := testupstream.Digest(t, img)
	layers := testupstream.LayerDigests(t, img)
	r.front.AllowBlobs("team/a")

	// A registry name with a port cannot be a path prefix in an image
	// reference (':' is not allowed there), so clients name it with ?ns=.
	if got := pullNS(t, m, corpName, "team/a", "v1"); got != want {
		t.Fatalf("pull %s/team/a:v1 = %s, want %s", corpName, got, want)
	}
	blobGETs := totalBlobGETs(t, r.corp, m)
	paths := func(repo string) []string {
		p := []string{"/v2/" + corpName + "/" + repo + "/manifests/" + want.String()}
		for _, l := range layers {
			p = append(p, "/v2/"+corpName+"/"+repo+"/blobs/"+l.String())
		}
		return p
	}

	// team/b does not have the image upstream: refused, by either form.
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		for i, p := range paths("team/b") {
			code := "BLOB_UNKNOWN"
			if i == 0 {
				code = "MANIFEST_UNKNOWN"
			}
			resp, body := do(t, method, m.url+p, "")
			wantRegistryError(t, method+" "+p, resp, body, http.StatusNotFound, code)
		}
		p := "/v2/team/b/blobs/" + layers[0].String() + "?ns=" + url.QueryEscape(corpName)
		resp, body := do(t, method, m.url+p, "")
		wantRegistryError(t, method+" "+p, resp, body, http.StatusNotFound, "BLOB_UNKNOWN")
	}
	// Nor through a public registry's name: blobs are shared by digest, so
	// a public repository must not become a way around the private one.
	for i, p := range paths("team/b") {
		public := strings.Replace(p, "/v2/"+corpName+"/team/b/", "/v2/library/x/", 1)
		code := "BLOB_UNKNOWN"
		if i == 0 {
			code = "MANIFEST_UNKNOWN"
		}
		resp, body := do(t, http.MethodGet, m.url+public, "")
		wantRegistryError(t, "public name for private content: GET "+public, resp, body, http.StatusNotFound, code)
	}
	if n := r.front.Requests(http.MethodGet, "team/b", "blobs"); n != 0 {
		t.Errorf("refusing team/b's blobs took %d upstream GETs; a HEAD is enough", n)
	}

	// Once upstream has the image in team/b, the cache serves it there,
	// after one HEAD per digest.
	r.corp.Push(t, "team/b", "v1", img)
	r.front.AllowBlobs("team/b")
	var heads int
	for round := 0; round < 2; round++ {
		for _, p := range paths("team/b") {
			resp, body := do(t, http.MethodGet, m.url+p, "")
			wantContent(t, "GET "+p, resp, body, lastDigest(p))
		}
		n := r.front.Requests(http.MethodHead, "team/b", "blobs") + r.front.Requests(http.MethodHead, "team/b", "manifests")
		if round == 1 && n != heads {
			t.Errorf("confirmed digests were asked again: %d upstream HEADs, was %d", n, heads)
		}
		heads = n
	}
	if got := totalBlobGETs(t, r.corp, m); got != blobGETs {
		t.Errorf("serving team/b fetched blobs upstream again (%d GETs, was %d)", got, blobGETs)
	}

	// Upstream down: linked content is still served (team/a), unlinked
	// content is refused (team/c), not leaked.
	r.corp.Push(t, "team/c", "v1", img)
	r.front.AllowBlobs("team/c")
	r.front.SetDown(true)
	for _, p := range paths("team/a") {
		resp, body := do(t, http.MethodGet, m.url+p, "")
		wantContent(t, "upstream down: GET "+p, resp, body, lastDigest(p))
	}
	if resp, body := do(t, http.MethodGet, m.url+"/v2/"+corpName+"/team/a/manifests/v1", ""); resp.StatusCode != http.StatusOK || digest.FromBytes(body) != want {
		t.Errorf("upstream down: team/a:v1 = %d, want the cached manifest", resp.StatusCode)
	}
	for _, p := range paths("team/c")[:2] { // a manifest and a layer: each waits out the upstream retries
		resp, body := do(t, http.MethodGet, m.url+p, "")
		wantRegistryError(t, "upstream down: GET "+p, resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
	}
}

// TestPrivatePassThroughNotSharedAcrossRepos: a pass-through (here: the
// disk is full, so misses are streamed without caching) is keyed by digest
// like the cache, so a private blob's running download must not become a
// way around the private registry either: a client naming the digest
// through a public repository, or a private one upstream does not show it
// in, is refused while the download runs; one that upstream confirms
// joins it, and the blob still crosses once.
func TestPrivatePassThroughNotSharedAcrossRepos(t *testing.T) {
	r := startRegistries(t)
	m := r.m
	img := r.corp.PushRandomImage(t, "team/a", "v1", 1, 256<<10)
	layer := testupstream.LayerDigests(t, img)[0]
	r.front.AllowBlobs("team/a")
	m.Server.diskFullUntil.Store(time.Now().Add(time.Hour).UnixNano())
	gate := r.corp.Gate(layer).SetHeadBytes(1024)
	blobURL := func(repo string) string {
		return m.url + "/v2/" + repo + "/blobs/" + layer.String() + "?ns=" + url.QueryEscape(corpName)
	}
	type answer struct {
		code int
		body []byte
	}
	get := func(u string) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			resp, err := http.Get(u)
			if err != nil {
				ch <- answer{}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			ch <- answer{resp.StatusCode, body}
		}()
		return ch
	}
	first := get(blobURL("team/a"))
	<-gate.Arrived() // team/a's download runs, held after its first KiB

	for _, u := range []string{m.url + "/v2/library/x/blobs/" + layer.String(), blobURL("team/b")} {
		var got answer
		select {
		case got = <-get(u):
		case <-time.After(30 * time.Second): // it joined the held download
			gate.Open()
			got = <-get(u)
		}
		if got.code != http.StatusNotFound || !strings.Contains(string(got.body), "BLOB_UNKNOWN") {
			t.Fatalf("GET %s while team/a's pass-through runs: %d %s, want 404 BLOB_UNKNOWN", u, got.code, got.body)
		}
	}

	// Upstream shows the blob in team/b now: team/b joins the running
	// download instead of starting its own.
	r.corp.Push(t, "team/b", "v1", img)
	r.front.AllowBlobs("team/b")
	second := get(blobURL("team/b"))
	eventually(t, "team/b's client joins the pass-through", func() bool {
		return r.front.Requests(http.MethodHead, "team/b", "blobs") > 0 && m.Server.passes.readers(layer) == 2
	})
	gate.Open()
	for _, ch := range []<-chan answer{first, second} {
		if got := <-ch; got.code != http.StatusOK || digest.FromBytes(got.body) != layer {
			t.Errorf("pass-through answer: %d, body %s, want 200 and %s", got.code, digest.FromBytes(got.body), layer)
		}
	}
	if n := r.front.Requests(http.MethodGet, "team/b", "blobs"); n != 0 {
		t.Errorf("team/b's client started its own download (%d upstream GETs) instead of joining", n)
	}
}

// TestPrivateRefusalsLookAlike (issue 8 item 11): with a private registry
// configured, a refused digest gets the same answer (status, code, message,
// detail) whether the mirror has it cached or not, so that the answer does
// not tell a client what others pulled. Checked with upstream up and down,
// for blobs and manifests, by GET and HEAD, through the private registry's
// name and through a public one's.
func TestPrivateRefusalsLookAlike(t *testing.T) {
	// The answers are compared, not timed: with upstream down, retries
	// would only make each of the 24 requests wait (~0.7 s).
	r := startRegistries(t, func(c *mirrorSetup) {
		for i := range c.Upstreams {
			if c.Upstreams[i].Name == corpName {
				c.Upstreams[i].Retries = -1
			}
		}
	})
	cachedImg := r.corp.PushRandomImage(t, "team/a", "v1", 1, 4096)
	otherImg := r.corp.PushRandomImage(t, "team/a", "v2", 1, 4096) // upstream only
	r.front.AllowBlobs("team/a")
	if got := pullNS(t, r.m, corpName, "team/a", "v1"); got != testupstream.Digest(t, cachedImg) {
		t.Fatalf("pull team/a:v1 = %s", got)
	}
	type pair struct{ kind, cached, uncached string }
	pairs := []pair{
		{"blobs", testupstream.LayerDigests(t, cachedImg)[0].String(), testupstream.LayerDigests(t, otherImg)[0].String()},
		{"manifests", testupstream.Digest(t, cachedImg).String(), testupstream.Digest(t, otherImg).String()},
		{"blobs", testupstream.LayerDigests(t, cachedImg)[0].String(), "sha256:" + strings.Repeat("5", 64)},
	}
	m := r.m
	// The answer, with the digest asked for written as <digest>.
	answer := func(method, prefix, kind, d string) string {
		resp, body := do(t, method, m.url+prefix+kind+"/"+d, "")
		return strings.ReplaceAll(fmt.Sprintf("%d %s %s", resp.StatusCode, resp.Header.Get("Content-Length"), body), d, "<digest>")
	}
	check := func(what string) {
		t.Helper()
		for _, p := range pairs {
			for _, prefix := range []string{"/v2/" + corpName + "/team/b/", "/v2/library/x/"} {
				for _, method := range []string{http.MethodGet, http.MethodHead} {
					cached := answer(method, prefix, p.kind, p.cached)
					uncached := answer(method, prefix, p.kind, p.uncached)
					if cached != uncached || strings.HasPrefix(cached, "200") {
						t.Errorf("%s, %s %s%s: cached answers %q, not cached %q", what, method, prefix, p.kind, cached, uncached)
					}
				}
			}
		}
	}
	check("upstream up")
	r.front.SetDown(true)
	check("upstream down")
	r.front.SetDown(false)

	r.restart(t, func(c *mirrorSetup) { c.Offline = true })
	m = r.m
	check("offline")
}

// TestRealClientsPullFromSeveralRegistries: dockerd, containerd, podman and
// skopeo pull docker.io, ghcr.io and private images through one mirror,
// each addressing it its own way; every digest is checked.
func TestRealClientsPullFromSeveralRegistries(t *testing.T) {
	r := startRegistries(t)
	m := r.m
	hubImg := r.hub.PushRandomImage(t, "library/alpine", "latest", 2, 16<<10)
	ghcrIdx := r.ghcr.PushRandomIndex(t, "org/app", "v1",
		[]v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}, 1, 8<<10)
	ghcrImg := r.ghcr.PushRandomImage(t, "org/tool", "v2", 1, 8<<10)
	corpImg := r.corp.PushRandomImage(t, "team/a", "v1", 1, 8<<10)
	r.front.AllowBlobs("team/a")
	hubWant := testupstream.Digest(t, hubImg).String()
	ghcrIdxWant := testupstream.Digest(t, ghcrIdx).String()
	ghcrWant := testupstream.Digest(t, ghcrImg).String()
	corpWant := testupstream.Digest(t, corpImg).String()

	t.Run("dockerd", func(t *testing.T) {
		d := realclient.StartDockerd(t, m.url)
		d.Pull(t, "alpine")
		if got := d.RepoDigest(t, "alpine"); got != hubWant {
			t.Errorf("docker pull alpine: %s, want %s", got, hubWant)
		}
	})
	t.Run("containerd", func(t *testing.T) {
		c := realclient.StartContainerd(t)
		hosts := realclient.WriteHostsDir(t, m.url) // _default: requests carry ?ns=
		for _, p := range []struct{ ref, want string }{
			{"docker.io/library/alpine:latest", hubWant},
			{"ghcr.io/org/app:v1", ghcrIdxWant},
			{corpName + "/team/a:v1", corpWant},
		} {
			if got := c.PullWithHostsDir(t, p.ref, hosts); got != p.want {
				t.Errorf("ctr pull %s: %s, want %s", p.ref, got, p.want)
			}
		}
		// override_path: the mirror URL carries the registry as a path.
		dir := t.TempDir()
		realclient.WriteHostsFile(t, dir, realclient.HostsConfig{Registry: ghcrName, Mirror: m.url + "/v2/" + ghcrName, OverridePath: true})
		if got := c.PullWithHostsDir(t, "ghcr.io/org/tool:v2", dir); got != ghcrWant {
			t.Errorf("ctr pull ghcr.io/org/tool:v2 (override_path): %s, want %s", got, ghcrWant)
		}
	})
	t.Run("podman", func(t *testing.T) {
		conf := realclient.WriteRegistriesConf(t,
			realclient.PathPrefixMirror("docker.io", m.host),
			realclient.PathPrefixMirror(ghcrName, m.host),
		)
		p := realclient.NewPodman(t)
		for _, c := range []struct{ ref, want string }{
			{"docker.io/library/alpine:latest", hubWant},
			{"ghcr.io/org/tool:v2", ghcrWant},
		} {
			if got := p.Pull(t, conf, c.ref); got != c.want {
				t.Errorf("podman pull %s: %s, want %s", c.ref, got, c.want)
			}
		}
	})
	t.Run("skopeo", func(t *testing.T) {
		for _, c := range []struct{ registry, ref, want string }{
			{ghcrName, "ghcr.io/org/app:v1", ghcrIdxWant},
			{"docker.io", "docker.io/library/alpine:latest", hubWant},
		} {
			conf := realclient.WriteRegistriesConf(t, realclient.PathPrefixMirror(c.registry, m.host))
			if got := realclient.SkopeoCopyWithConf(t, conf, c.ref, t.TempDir()); got != c.want {
				t.Errorf("skopeo copy %s: %s, want %s", c.ref, got, c.want)
			}
		}
	})
	verifyBlobFiles(t, m.dataDir)
}

// lastDigest is the digest at the end of a /v2/ path.
func lastDigest(p string) digest.Digest {
	return digest.Digest(p[strings.LastIndexByte(p, '/')+1:])
}

// Registry-style requests and checks are internal/testpull's.
var (
	do          = testpull.Do
	wantContent = testpull.WantContent
)

// pullNS pulls registry/repo:tag through m the way containerd asks (?ns=),
// verifying every blob; it returns the manifest's digest.
func pullNS(t *testing.T, m *testMirror, registry, repo, tag string) digest.Digest {
	t.Helper()
	return testpull.NS(t, m.url, registry, repo, tag)
}

// TestConfirmationsOfAManifestAndABlobApart: in a private registry, a blob
// GET of a cached digest not yet confirmed in this repository asks
// upstream's blob HEAD, even while a manifest-form request for the same
// digest waits on upstream's manifest HEAD. Before, the two shared one
// confirmation: the blob's client got the manifest HEAD's 404 for a blob
// upstream has in that repository.
func TestConfirmationsOfAManifestAndABlobApart(t *testing.T) {
	r := startRegistries(t)
	img := r.corp.PushRandomImage(t, "team/a", "v1", 1, 4096)
	layer := testupstream.LayerDigests(t, img)[0]
	r.front.AllowBlobs("team/a")
	pullNS(t, r.m, corpName, "team/a", "v1")
	r.corp.Push(t, "team/b", "v1", img)
	r.front.AllowBlobs("team/b")
	gate := r.corp.GateManifestHeads()
	defer gate.Open()
	asManifest := make(chan int, 1)
	go func() {
		resp, err := http.Get(r.m.url + "/v2/" + corpName + "/team/b/manifests/" + layer.String())
		if err != nil {
			asManifest <- -1
			return
		}
		resp.Body.Close()
		asManifest <- resp.StatusCode
	}()
	<-gate.Arrived()
	blob := make(chan int, 1)
	go func() {
		resp, err := http.Get(r.m.url + "/v2/" + corpName + "/team/b/blobs/" + layer.String())
		if err != nil {
			blob <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		blob <- resp.StatusCode
	}()
	select {
	case status := <-blob:
		if status != http.StatusOK {
			t.Errorf("blob GET in team/b: %d, want 200", status)
		}
	case <-time.After(10 * time.Second): // only when it waits on the held manifest HEAD
		t.Error("the blob GET waited on the manifest HEAD of its digest")
	}
	gate.Open()
	if status := <-asManifest; status != http.StatusNotFound {
		t.Errorf("a layer asked for as a manifest: %d, want 404", status)
	}
}
