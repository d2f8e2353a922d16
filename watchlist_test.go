package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testupstream"
)

// graphDigests lists img's config and layers.
func graphDigests(t *testing.T, img v1.Image) []digest.Digest {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return append([]digest.Digest{digest.Digest(cfg.String())}, testupstream.LayerDigests(t, img)...)
}

// TestWatchListWarmsMovedTag: a watched tag that moves upstream is
// revalidated by the next pass (triggered, not waited for), its new graph
// is fetched and pinned with no client asking, and a client pull after
// that costs upstream nothing: no blob GET, no manifest request.
func TestWatchListWarmsMovedTag(t *testing.T) {
	up := testupstream.Start(t)
	first := up.PushRandomImage(t, "library/app", "latest", 2, 64<<10)
	m := startMirror(t, up, func(c *config) {
		c.Watch = []watchConfig{{Images: []string{"docker.io/library/app:latest"}, Interval: duration{24 * time.Hour}, Pin: true}}
	})
	ctx := context.Background()
	<-m.app.watch.RunNow(ctx) // the startup pass is done too
	files := blobFiles(t, m.cfg.DataDir)
	for _, d := range graphDigests(t, first) {
		if !files[d.Encoded()] {
			t.Fatalf("startup pass: %s not cached", d)
		}
	}

	second := up.PushRandomImage(t, "library/app", "latest", 2, 64<<10)
	up.Reset()
	<-m.app.watch.RunNow(ctx)
	files = blobFiles(t, m.cfg.DataDir)
	var blobGETs int
	for _, d := range graphDigests(t, second) {
		if !files[d.Encoded()] {
			t.Errorf("after the tag moved: %s not cached by the watch", d)
		}
		blobGETs += up.BlobGETs(d)
	}
	watchHEADs, watchGETs := up.ManifestRequests(http.MethodHead), up.ManifestRequests(http.MethodGet)
	st := m.app.watchStatus()
	if len(st) != 1 || st[0].Result != "moved" || st[0].Digest != testupstream.Digest(t, second).String() || st[0].Failures != 0 {
		t.Fatalf("watch status: %+v", st)
	}
	images, err := adminClient(t, m).Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pinned := false
	for _, im := range images {
		if im.Ref == "docker.io/library/app:latest" && im.Digest == testupstream.Digest(t, second) && im.Pinned {
			pinned = true
		}
	}
	if !pinned {
		t.Errorf("the moved image is not pinned at its new digest: %+v", images)
	}

	up.Reset()
	if got := pullAll(t, m, "library/app:latest"); got != testupstream.Digest(t, second) {
		t.Fatalf("client pull: %s", got)
	}
	var clientBlobGETs int
	for _, d := range graphDigests(t, second) {
		clientBlobGETs += up.BlobGETs(d)
	}
	clientManifests := up.ManifestRequests(http.MethodHead) + up.ManifestRequests(http.MethodGet)
	if clientBlobGETs != 0 || clientManifests != 0 {
		t.Errorf("client pull after the watch pass: %d upstream blob GETs, %d manifest requests; want 0", clientBlobGETs, clientManifests)
	}
	t.Logf("tag move: the watch pass made %d upstream requests ahead of time (%d manifest HEAD, %d manifest GETs incl. cosign tag probes, %d blob GETs); the client pull after it made %d",
		watchHEADs+watchGETs+blobGETs, watchHEADs, watchGETs, blobGETs, clientBlobGETs+clientManifests)

	// /metrics: last and next run per image.
	_, body := get(t, http.MethodGet, m.url+"/metrics")
	for _, name := range []string{"regmirror_watch_last_run_timestamp_seconds", "regmirror_watch_next_run_timestamp_seconds", "regmirror_watch_failures_total"} {
		if !strings.Contains(string(body), name+`{image="docker.io/library/app:latest"}`) {
			t.Errorf("/metrics lacks %s for the watched image", name)
		}
	}
	if last, next := metricValue(t, m, "regmirror_watch_last_run_timestamp_seconds"), metricValue(t, m, "regmirror_watch_next_run_timestamp_seconds"); last <= 0 || next <= last {
		t.Errorf("last run %v, next run %v", last, next)
	}
}

// TestWatchListSeesAMoveAClientSawFirst: a client's pull that follows a
// tag move before the next watch pass updates the cache's record; the
// pass still sees the move (against what it last warmed), fetches the new
// graph and pins it there.
func TestWatchListSeesAMoveAClientSawFirst(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/app", "latest", 2, 64<<10)
	m := startMirror(t, up, func(c *config) {
		c.TagTTL = duration{time.Nanosecond}
		c.Watch = []watchConfig{{Images: []string{"docker.io/library/app:latest"}, Interval: duration{24 * time.Hour}, Pin: true}}
	})
	ctx := context.Background()
	<-m.app.watch.RunNow(ctx)
	second := up.PushRandomImage(t, "library/app", "latest", 2, 64<<10)
	if resp, _ := get(t, http.MethodGet, m.url+"/v2/library/app/manifests/latest"); resp.Header.Get("Docker-Content-Digest") != testupstream.Digest(t, second).String() {
		t.Fatalf("the client's manifest GET: %d %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
	<-m.app.watch.RunNow(ctx)
	if st := m.app.watchStatus(); len(st) != 1 || st[0].Result != "moved" || st[0].Moves != 1 || st[0].Digest != testupstream.Digest(t, second).String() {
		t.Fatalf("watch status: %+v", st)
	}
	files := blobFiles(t, m.cfg.DataDir)
	for _, d := range graphDigests(t, second) {
		if !files[d.Encoded()] {
			t.Errorf("the new graph's %s is not cached", d)
		}
	}
	var pin []digest.Digest
	m.app.cache.Store.Pins(func(name string, ds []digest.Digest) error {
		if name == "docker.io/library/app:latest" {
			pin = ds
		}
		return nil
	})
	if !slices.Contains(pin, testupstream.Digest(t, second)) {
		t.Errorf("the pin lists %v, not the new image %s", pin, testupstream.Digest(t, second))
	}
}

// TestWatchListFailuresAndBackoff: a pass that upstream fails is counted
// per image; while the registry is marked out the next pass defers
// without asking upstream; an unchanged tag costs one HEAD.
func TestWatchListFailuresAndBackoff(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/app", "latest", 1, 1024)
	idx := up.PushRandomIndex(t, "library/multi", "1", []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}, 1, 1024)
	m := startMirror(t, up, func(c *config) {
		c.Server.OutageBackoff = duration{time.Hour}
		c.Watch = []watchConfig{{Images: []string{"docker.io/library/app:latest", "docker.io/library/multi:1"},
			Platforms: []string{"linux/arm64"}, Interval: duration{24 * time.Hour}}}
	})
	ctx := context.Background()
	<-m.app.watch.RunNow(ctx)

	// Only the chosen platform was fetched.
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	files := blobFiles(t, m.cfg.DataDir)
	for _, child := range im.Manifests {
		cached := files[child.Digest.Hex]
		if want := child.Platform.Architecture == "arm64"; cached != want {
			t.Errorf("child %s (%s): cached %v, want %v", child.Digest, child.Platform.Architecture, cached, want)
		}
	}

	up.Reset()
	<-m.app.watch.RunNow(ctx)
	if n := up.ManifestRequests(http.MethodHead); n != 2 {
		t.Errorf("an unchanged pass made %d HEADs, want one per image", n)
	}
	if n := up.ManifestRequests(http.MethodGet); n != 0 {
		t.Errorf("an unchanged pass made %d manifest GETs", n)
	}

	up.SetStatus(http.StatusServiceUnavailable, "")
	<-m.app.watch.RunNow(ctx)
	st := m.app.watchStatus()
	if st[0].Result != "failed" || st[0].Failures != 1 {
		t.Errorf("after a 503: %+v", st[0])
	}
	up.Reset()
	<-m.app.watch.RunNow(ctx)
	for _, s := range m.app.watchStatus() {
		if s.Result != "deferred" {
			t.Errorf("while the registry is marked out: %+v", s)
		}
	}
	if n := up.ManifestRequests(http.MethodHead) + up.ManifestRequests(http.MethodGet); n != 0 {
		t.Errorf("a deferred pass asked upstream %d times", n)
	}
	if n := metricValue(t, m, "regmirror_watch_failures_total"); n < 1 {
		t.Errorf("regmirror_watch_failures_total = %v", n)
	}
}

// TestFreshnessConfig: the example file's [[tag_policy]] and [[watch]]
// entries, uncommented, decode and check; bad watch entries are refused.
func TestFreshnessConfig(t *testing.T) {
	example, err := os.ReadFile("config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(example)
	i, j := strings.Index(s, "# Tag freshness rules"), strings.Index(s, "\n[server]")
	if i < 0 || j < i {
		t.Fatal("config.example.toml: no tag_policy/watch section before [server]")
	}
	var lines []string
	for _, line := range strings.Split(s[i:j], "\n") {
		if l, ok := strings.CutPrefix(line, "# "); ok && (strings.HasPrefix(l, "[[") || tomlKey.MatchString(l)) {
			line = l
		}
		lines = append(lines, line)
	}
	path := filepath.Join(t.TempDir(), "freshness.toml")
	writeFile(t, path, strings.Join(lines, "\n"))
	c := defaultConfig()
	if err := loadConfigFile(&c, path); err != nil {
		t.Fatalf("uncommented example: %v", err)
	}
	if len(c.TagPolicy) != 3 || len(c.Watch) != 1 {
		t.Fatalf("example: %d tag policies, %d watch entries; want 3 and 1", len(c.TagPolicy), len(c.Watch))
	}
	if _, err := c.tagPolicy(); err != nil {
		t.Errorf("example tag policy: %v", err)
	}
	w := c.Watch[0]
	w.File = "" // /etc/regmirror/watch.txt is not here
	if err := w.check(0); err != nil || w.Interval.Duration != 30*time.Minute || !w.Pin || len(w.Platforms) != 2 {
		t.Errorf("example watch entry: %+v, %v", w, err)
	}

	list := filepath.Join(t.TempDir(), "watch.txt")
	writeFile(t, list, "alpine:3.20 # a comment\n\nghcr.io/org/app:main\n")
	good := watchConfig{File: list, Images: []string{"alpine:3.20"}}
	if err := good.check(0); err != nil || good.Interval.Duration != defaultWatchInterval {
		t.Fatalf("a file list: %v", err)
	}
	if ts, err := good.targets(); err != nil || len(ts) != 2 || ts[1].Image != "ghcr.io/org/app:main" {
		t.Errorf("targets: %+v, %v", ts, err)
	}
	for _, bad := range []struct {
		w    watchConfig
		want string
	}{
		{watchConfig{}, "give images, a file, or both"},
		{watchConfig{Images: []string{"Not A Ref"}}, "image"},
		{watchConfig{Images: []string{"alpine"}, Interval: duration{time.Millisecond}}, "at least 1s"},
		{watchConfig{Images: []string{"alpine"}, Platforms: []string{"linux"}}, "platforms"},
		{watchConfig{File: filepath.Join(t.TempDir(), "missing.txt")}, "no such file"},
	} {
		if err := bad.w.check(0); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: err = %v, want one about %q", bad.w, err, bad.want)
		}
	}
}

// TestWatchListSharesFillWithClient: a client pulling a layer while the
// watch list is fetching it joins the same fill: upstream sends it once.
func TestWatchListSharesFillWithClient(t *testing.T) {
	const size = 4 << 20
	up := testupstream.Start(t)
	_, big := up.PushLargeBlobImage(t, "library/big", "latest", size)
	gate := up.Gate(big).SetHeadBytes(1 << 20)
	defer gate.Open()
	m := startMirror(t, up, func(c *config) {
		c.Watch = []watchConfig{{Images: []string{"docker.io/library/big:latest"}, Interval: duration{24 * time.Hour}}}
	})
	<-gate.Arrived() // the startup pass is downloading the layer

	resp, first := startDownload(t, m.url+"/v2/library/big/blobs/"+big.String(), 1)
	defer resp.Body.Close()
	if how := resp.Header.Get("X-Regmirror-Cache"); how != "join" {
		t.Errorf("a client pulling during the watch's fill: cache %q, want join", how)
	}
	gate.Open()
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(append(first, rest...)); got != big {
		t.Fatalf("client got %s, want %s", got, big)
	}
	<-m.app.watch.RunNow(context.Background())
	if n := up.BlobGETs(big); n != 1 {
		t.Errorf("upstream sent the layer %d times, want once", n)
	}
	if st := m.app.watchStatus(); len(st) != 1 || st[0].Failures != 0 {
		t.Errorf("watch status: %+v", st)
	}
	verifyBlobFiles(t, m.cfg.DataDir)
}
