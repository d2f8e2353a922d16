package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/internal/testpull"
	"github.com/regmirror/regmirror/internal/testupstream"
	"github.com/regmirror/regmirror/proxy"
	"github.com/regmirror/regmirror/status"
)

func statusModel(t testing.TB, m *mirror) status.Model {
	t.Helper()
	resp, body := get(t, http.MethodGet, m.url+"/_regmirror/status")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/_regmirror/status: %d %s", resp.StatusCode, body)
	}
	var sm status.Model
	if err := json.Unmarshal(body, &sm); err != nil {
		t.Fatalf("status JSON: %v: %s", err, body)
	}
	return sm
}

func TestMetricsPerRegistry(t *testing.T) {
	r := startRegistries(t)
	r.hub.SetRateLimit(100)
	img := r.hub.PushRandomImage(t, "library/alpine", "3.20", 2, 2048)
	r.ghcr.PushRandomImage(t, "org/tool", "v1", 1, 1024)
	r.hub.Reset() // the pushes' tokens are not the mirror's
	pullAll(t, r.m, "library/alpine:3.20")
	pullAll(t, r.m, "library/alpine:3.20") // now from the cache
	pullNS(t, r.m, ghcrName, "org/tool", "v1")

	for _, tc := range []struct {
		metric string
		labels []string
	}{
		{"regmirror_requests_total", []string{"registry", "docker.io", "endpoint", "blob", "cache", "hit"}},
		{"regmirror_requests_total", []string{"registry", "ghcr.io", "endpoint", "manifest", "cache", "miss"}},
		{"regmirror_served_bytes_total", []string{"registry", "docker.io", "source", "cache"}},
		{"regmirror_served_bytes_total", []string{"registry", "ghcr.io", "source", "fill"}},
		{"regmirror_upstream_requests_total", []string{"registry", "ghcr.io", "kind", "blob", "result", "ok"}},
		{"regmirror_upstream_requests_total", []string{"registry", "docker.io", "kind", "manifest", "result", "ok"}},
		{"regmirror_fills_total", []string{"registry", "docker.io", "result", "ok"}},
		{"regmirror_request_duration_seconds_count", []string{"registry", "docker.io", "endpoint", "blob"}},
		{"regmirror_upstream_request_duration_seconds_count", []string{"registry", "ghcr.io", "kind", "manifest"}},
		{"regmirror_upstream_token_fetches_total", []string{"registry", "docker.io"}},
		{"regmirror_build_info", []string{"version", buildVersion()}},
	} {
		if v, ok := testpull.MetricSum(t, r.m.url, tc.metric, tc.labels...); !ok || v <= 0 {
			t.Errorf("%s%v = %v (found %v), want > 0", tc.metric, tc.labels, v, ok)
		}
	}
	// Bytes downloaded: every layer and config once, and the manifests.
	var want int64
	layers, _ := img.Layers()
	for _, l := range layers {
		n, _ := l.Size()
		want += n
	}
	if v, _ := testpull.MetricSum(t, r.m.url, "regmirror_upstream_bytes_total", "registry", "docker.io"); int64(v) < want {
		t.Errorf("upstream bytes from docker.io %v, want at least the layers' %d", v, want)
	}
	// Docker Hub's budget: the fake counted the one manifest GET down.
	if v, ok := testpull.MetricSum(t, r.m.url, "regmirror_upstream_ratelimit_remaining", "registry", "docker.io"); !ok || int(v) != r.hub.RateLimitRemaining() {
		t.Errorf("ratelimit_remaining %v (found %v), upstream says %d", v, ok, r.hub.RateLimitRemaining())
	}
	if v, _ := testpull.MetricSum(t, r.m.url, "regmirror_upstream_ratelimit_limit", "registry", "docker.io"); v != 100 {
		t.Errorf("ratelimit_limit %v, want 100", v)
	}
	if _, ok := testpull.MetricSum(t, r.m.url, "regmirror_upstream_ratelimit_remaining", "registry", "ghcr.io"); ok {
		t.Error("a rate-limit gauge for a registry that sends no headers")
	}
	if v, _ := testpull.MetricSum(t, r.m.url, "regmirror_upstream_token_fetches_total", "registry", "docker.io"); int(v) != r.hub.TokenRequests() {
		t.Errorf("token fetches %v, the token server saw %d", v, r.hub.TokenRequests())
	}

	// An outage: marked in the gauge, and the stale answers counted.
	r.hub.SetStatus(http.StatusServiceUnavailable, "")
	m2 := startMirror(t, r.hub, func(c *config) { c.TagTTL = duration{time.Nanosecond} })
	r.hub.ClearFaults()
	pullAll(t, m2, "library/alpine:3.20")
	r.hub.SetStatus(http.StatusServiceUnavailable, "")
	pullAll(t, m2, "library/alpine:3.20")
	r.hub.ClearFaults()
	if v, _ := testpull.MetricSum(t, m2.url, "regmirror_stale_served_total", "registry", "docker.io"); v < 1 {
		t.Errorf("stale answers %v, want ≥ 1", v)
	}
	if v, _ := testpull.MetricSum(t, m2.url, "regmirror_upstream_outage", "registry", "docker.io"); v != 1 {
		t.Errorf("outage gauge %v, want 1", v)
	}
	sm := statusModel(t, m2)
	if len(sm.Registries) != 1 || !sm.Registries[0].Out || sm.Registries[0].OutReason == "" {
		t.Errorf("status page registries %+v, want docker.io marked out with a reason", sm.Registries)
	}
}

func TestRateLimitShield(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/app", "1", 1, 512)
	up.PushRandomImage(t, "library/app", "2", 1, 512)
	up.PushRandomImage(t, "library/app", "3", 1, 512)
	up.SetRateLimit(10)
	m := startMirror(t, up, func(c *config) {
		c.TagTTL = duration{time.Nanosecond} // every pull of a tag revalidates
		c.Server.RateLimitReserve = "9"
	})
	pullAll(t, m, "library/app:1") // budget 9 left: not below the reserve
	heads := up.ManifestRequests(http.MethodHead)
	resp, _ := get(t, http.MethodGet, m.url+"/v2/library/app/manifests/1")
	if resp.Header.Get("X-Regmirror-Cache") != "revalidated" || up.ManifestRequests(http.MethodHead) != heads+1 {
		t.Fatalf("with the budget at the reserve: %s, %d HEADs; want revalidated with one HEAD",
			resp.Header.Get("X-Regmirror-Cache"), up.ManifestRequests(http.MethodHead)-heads)
	}

	pullAll(t, m, "library/app:2") // a miss still goes upstream: 8 left, below 9
	if up.RateLimitRemaining() != 8 {
		t.Fatalf("upstream budget %d, want 8", up.RateLimitRemaining())
	}
	heads, gets := up.ManifestRequests(http.MethodHead), up.ManifestRequests(http.MethodGet)
	resp, _ = get(t, http.MethodGet, m.url+"/v2/library/app/manifests/1")
	if got := resp.Header.Get("X-Regmirror-Cache"); got != "stale" {
		t.Errorf("an expired tag with the budget below the reserve answered %q, want stale", got)
	}
	if up.ManifestRequests(http.MethodHead) != heads || up.ManifestRequests(http.MethodGet) != gets {
		t.Error("the shield let a revalidation through")
	}
	// The watch list's revalidation defers (it is not a failure of the image).
	if _, err := m.app.proxy.RevalidateTag(context.Background(), "docker.io", "library/app", "1"); !errors.Is(err, proxy.ErrUpstreamOut) {
		t.Errorf("RevalidateTag while shielded: %v, want ErrUpstreamOut (the watch list defers)", err)
	}
	if v, _ := testpull.MetricSum(t, m.url, "regmirror_upstream_ratelimit_shield", "registry", "docker.io"); v != 1 {
		t.Errorf("shield gauge %v, want 1", v)
	}
	sm := statusModel(t, m)
	if rl := sm.Registries[0].RateLimit; rl == nil || !rl.Shielded || rl.Remaining != 8 || rl.Limit != 10 || rl.Reserve != 9 {
		t.Errorf("status page rate limit %+v, want 8 of 10 left, reserve 9, shielded", rl)
	}
	pullAll(t, m, "library/app:3") // misses still go upstream
	if up.ManifestRequests(http.MethodGet) == gets {
		t.Error("a miss was not fetched while shielded")
	}

	// The budget recovers (a new window): the next answer says so, and
	// tags are revalidated again.
	up.SetRateLimit(10)
	up.PushRandomImage(t, "library/app", "4", 1, 512)
	pullAll(t, m, "library/app:4")
	heads = up.ManifestRequests(http.MethodHead)
	resp, _ = get(t, http.MethodGet, m.url+"/v2/library/app/manifests/1")
	if resp.Header.Get("X-Regmirror-Cache") != "revalidated" || up.ManifestRequests(http.MethodHead) != heads+1 {
		t.Errorf("after the budget recovered: %s; want revalidated", resp.Header.Get("X-Regmirror-Cache"))
	}
}

func TestReadyzAndHealthcheck(t *testing.T) {
	up := testupstream.Start(t)
	m := startMirror(t, up)
	resp, body := get(t, http.MethodGet, m.url+"/readyz")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"ready":true`) {
		t.Fatalf("/readyz of a healthy mirror: %d %s", resp.StatusCode, body)
	}
	run := func(args ...string) error {
		var out strings.Builder
		return newCLI(&out, &out).Run(append([]string{"regmirror", "healthcheck", "--server", m.url}, args...))
	}
	if err := run(); err != nil {
		t.Fatalf("healthcheck of a ready mirror: %v", err)
	}
	// Without --server, where serve listens: REGMIRROR_LISTEN (as the
	// container image sets it) counts for healthcheck as for serve.
	t.Setenv("REGMIRROR_LISTEN", m.host)
	var out strings.Builder
	if err := newCLI(&out, &out).Run([]string{"regmirror", "healthcheck"}); err != nil {
		t.Fatalf("healthcheck with REGMIRROR_LISTEN=%s: %v", m.host, err)
	}

	// The disk below min_free with nothing to evict: not ready, and why.
	full := startMirror(t, up, func(c *config) { c.Cache.MinFree = "1000PiB" })
	resp, body = get(t, http.MethodGet, full.url+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "below min_free") {
		t.Fatalf("/readyz below min_free: %d %s", resp.StatusCode, body)
	}
	if err := newCLI(&out, &out).Run([]string{"regmirror", "healthcheck", "--server", full.url}); err == nil {
		t.Error("healthcheck of an unready mirror succeeded")
	}
	if err := newCLI(&out, &out).Run([]string{"regmirror", "healthcheck", "--liveness", "--server", full.url}); err != nil {
		t.Errorf("liveness of a running mirror: %v", err)
	}

	// A failing index: not ready. (Closing the store under the server is
	// the failure a test can cause; the server must still answer.)
	m.app.cache.Store.Close()
	resp, body = get(t, http.MethodGet, m.url+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "index is failing") {
		t.Fatalf("/readyz with the index closed: %d %s", resp.StatusCode, body)
	}
	if err := run(); err == nil {
		t.Error("healthcheck with a failing index succeeded")
	}
	resp, _ = get(t, http.MethodGet, m.url+"/healthz")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz (liveness) %d", resp.StatusCode)
	}
}

func TestPurgeKeepsSharedBase(t *testing.T) {
	up := testupstream.Start(t)
	base := up.PushRandomImage(t, "library/base", "1", 2, 4096)
	extra, err := random.Layer(2048, "application/vnd.docker.image.rootfs.diff.tar.gzip")
	if err != nil {
		t.Fatal(err)
	}
	app, err := mutate.AppendLayers(base, extra)
	if err != nil {
		t.Fatal(err)
	}
	up.Push(t, "library/app", "1", app)
	m := startMirror(t, up, func(c *config) { c.TagTTL = duration{time.Hour} })
	pullAll(t, m, "library/base:1")
	appDigest := pullAll(t, m, "library/app:1")
	baseDigest := testupstream.Digest(t, base)
	baseConfig, _ := base.ConfigName()
	shared := testupstream.LayerDigests(t, base)

	// A flag after the images (urfave/cli reads flags only before them) is
	// refused before anything is purged: it would have purged base:1 whole.
	for _, cmd := range []string{"purge", "pin", "unpin"} {
		var out strings.Builder
		err := newCLI(&out, &out).Run([]string{"regmirror", cmd, "--data-dir", m.cfg.DataDir, "--server", m.url, "library/base:1", "--keep-blobs"})
		if err == nil || !strings.Contains(err.Error(), `"--keep-blobs" comes after the images: flags go before them`) || out.Len() != 0 {
			t.Fatalf("%s with a trailing flag: %v, said %q", cmd, err, out.String())
		}
	}
	if !cached(t, m, baseDigest) {
		t.Fatal("purge with a trailing flag purged the image")
	}

	// Through the management API (the running server holds the data dir).
	var out strings.Builder
	err = newCLI(&out, &out).Run([]string{"regmirror", "purge", "--data-dir", m.cfg.DataDir, "--server", m.url, "library/base:1"})
	if err != nil {
		t.Fatalf("purge: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "purged docker.io/library/base:1: 1 tags, 2 blobs") ||
		!strings.Contains(out.String(), "kept 2 blobs") {
		t.Errorf("purge said %q; want the manifest and config gone and the 2 shared layers kept", out.String())
	}
	if cached(t, m, baseDigest) || cached(t, m, digest.Digest(baseConfig.String())) {
		t.Error("the purged image's manifest or config is still cached")
	}
	for _, d := range shared {
		if !cached(t, m, d) {
			t.Fatalf("shared layer %s was purged", d)
		}
	}
	// The other image is intact: served whole without asking upstream.
	blobGETs := totalBlobGETs(t, up, m)
	if got := pullAll(t, m, "library/app:1"); got != appDigest {
		t.Fatalf("app after the purge: %s", got)
	}
	if totalBlobGETs(t, up, m) != blobGETs {
		t.Error("pulling the other image after the purge fetched blobs upstream")
	}
	verifyBlobFiles(t, m.cfg.DataDir)
	// The purged tag is asked of upstream at the next pull.
	gets := up.ManifestRequests(http.MethodGet)
	if got := pullAll(t, m, "library/base:1"); got != baseDigest {
		t.Fatalf("base after the purge: %s", got)
	}
	if up.ManifestRequests(http.MethodGet) == gets {
		t.Error("the purged tag was not fetched from upstream again")
	}

	// --keep-blobs: the tag record only; the next pull revalidates.
	ops := adminClient(t, m)
	res, err := ops.Purge(context.Background(), admin.PurgeRequest{Ref: "library/app:1", KeepBlobs: true})
	if err != nil || len(res.Tags) != 1 || res.Blobs != 0 {
		t.Fatalf("purge --keep-blobs: %+v, %v", res, err)
	}
	if !cached(t, m, appDigest) {
		t.Error("--keep-blobs removed the manifest")
	}
	resp, _ := get(t, http.MethodGet, m.url+"/v2/library/app/manifests/1")
	if c := resp.Header.Get("X-Regmirror-Cache"); c != "miss" {
		t.Errorf("after purging the tag the pull answered %q, want miss (asked upstream)", c)
	}

	// --all-tags on a repository: every tag, its images, its links.
	if _, err := ops.Purge(context.Background(), admin.PurgeRequest{Ref: "library/app", AllTags: true}); err != nil {
		t.Fatalf("purge --all-tags: %v", err)
	}
	if cached(t, m, appDigest) || cached(t, m, testupstream.LayerDigests(t, app)[2]) {
		t.Error("--all-tags left the image or its own layer")
	}
	for _, d := range shared {
		if !cached(t, m, d) {
			t.Fatalf("--all-tags purged shared layer %s that base:1 uses", d)
		}
	}
	_, body := get(t, http.MethodGet, m.url+"/v2/_catalog")
	if strings.Contains(string(body), "library/app") {
		t.Errorf("catalog after purging every tag of library/app: %s", body)
	}
	if _, err := ops.Purge(context.Background(), admin.PurgeRequest{Ref: "library/nothing:1"}); err == nil {
		t.Error("purging an image that is not cached succeeded")
	}
	if _, err := ops.Purge(context.Background(), admin.PurgeRequest{Ref: "library/app:1", AllTags: true}); err == nil {
		t.Error("--all-tags with a tag succeeded")
	}

	// By digest: the image goes, and the tag that points to it.
	res, err = ops.Purge(context.Background(), admin.PurgeRequest{Ref: "library/base@" + baseDigest.String()})
	if err != nil || len(res.Tags) != 1 || res.Blobs != 4 || cached(t, m, baseDigest) {
		t.Fatalf("purge by digest: %+v, %v; want its tag and its 4 blobs gone", res, err)
	}

	// The management API stays loopback + token only.
	req, _ := http.NewRequest(http.MethodPost, m.url+"/_regmirror/purge", strings.NewReader(`{"ref":"library/base:1"}`))
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusUnauthorized {
		t.Errorf("purge without the token answered %d", resp2.StatusCode)
	}
}

func TestCatalog(t *testing.T) {
	r := startRegistries(t)
	for _, repo := range []string{"library/a", "library/b", "library/c"} {
		r.hub.PushRandomImage(t, repo, "1", 1, 256)
		pullAll(t, r.m, repo+":1")
	}
	r.ghcr.PushRandomImage(t, "org/tool", "v1", 1, 256)
	pullNS(t, r.m, ghcrName, "org/tool", "v1")

	resp, body := get(t, http.MethodGet, r.m.url+"/v2/_catalog")
	if resp.StatusCode != http.StatusOK || string(body) != `{"repositories":["ghcr.io/org/tool","library/a","library/b","library/c"]}` {
		t.Fatalf("catalog: %d %s", resp.StatusCode, body)
	}
	resp, body = get(t, http.MethodGet, r.m.url+"/v2/_catalog?n=2")
	if string(body) != `{"repositories":["ghcr.io/org/tool","library/a"]}` ||
		resp.Header.Get("Link") != `</v2/_catalog?last=library%2Fa&n=2>; rel="next"` {
		t.Fatalf("first page: %s, Link %q", body, resp.Header.Get("Link"))
	}
	resp, body = get(t, http.MethodGet, r.m.url+"/v2/_catalog?n=2&last=library/a")
	if string(body) != `{"repositories":["library/b","library/c"]}` || resp.Header.Get("Link") != "" {
		t.Fatalf("last page: %s, Link %q", body, resp.Header.Get("Link"))
	}
	_, body = get(t, http.MethodGet, r.m.url+"/v2/_catalog?ns=ghcr.io")
	if string(body) != `{"repositories":["org/tool"]}` {
		t.Fatalf("catalog of ghcr.io: %s", body)
	}
	resp, body = get(t, http.MethodGet, r.m.url+"/v2/_catalog?n=0") // was a recovered panic: index -1
	if resp.StatusCode != http.StatusOK || string(body) != `{"repositories":[]}` || resp.Header.Get("Link") != "" {
		t.Fatalf("n=0: %d %s, Link %q; want an empty page", resp.StatusCode, body, resp.Header.Get("Link"))
	}
	resp, body = get(t, http.MethodGet, r.m.url+"/v2/_catalog?n=x")
	wantWireError(t, resp, body, http.StatusBadRequest, "PAGINATION_NUMBER_INVALID")
}
