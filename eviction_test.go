package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/airgap"
	"github.com/regmirror/regmirror/internal/realclient"
	"github.com/regmirror/regmirror/internal/testupstream"
)

const mib = 1 << 20

// budgetMirror runs a mirror with a byte budget of max and no min_free, so
// that only the budget drives eviction.
func budgetMirror(t *testing.T, up *testupstream.Server, max string) *mirror {
	return startMirror(t, up, func(c *config) {
		c.Cache.MaxSize = max
		c.Cache.MinFree = "0"
	})
}

// cached reports whether the mirror holds d.
func cached(t *testing.T, m *mirror, d digest.Digest) bool {
	_, err := m.app.cache.Store.Stat(d)
	return err == nil
}

func gc(t *testing.T, m *mirror) admin.GCResult {
	t.Helper()
	res, err := adminClient(t, m).GC(context.Background())
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	return res
}

func usage(t *testing.T, m *mirror) admin.Usage {
	t.Helper()
	u, err := adminClient(t, m).Usage(context.Background(), 10)
	if err != nil {
		t.Fatalf("usage: %v", err)
	}
	return u
}

// TestEvictionLRUWithinBudget: with room for about three 1 MiB images, the
// least recently used one goes when a fourth arrives; a re-pulled one stays.
func TestEvictionLRUWithinBudget(t *testing.T) {
	up := testupstream.Start(t)
	layers := map[string]digest.Digest{}
	for _, name := range []string{"a", "b", "c", "d"} {
		_, layers[name] = up.PushLargeBlobImage(t, "library/"+name, "latest", mib)
	}
	// high = 3.70 MiB, low = 3.32 MiB: three images fit, a fourth does not,
	// and evicting one image gets under the low watermark.
	m := budgetMirror(t, up, fmt.Sprint(39*mib/10))
	for _, name := range []string{"a", "b", "c"} {
		pullAll(t, m, "library/"+name+":latest")
	}
	pullAll(t, m, "library/a:latest") // a is now more recent than b
	pullAll(t, m, "library/d:latest")
	gc(t, m) // the pass a fill kicks off runs in the background; this one waits

	if cached(t, m, layers["b"]) {
		t.Error("b, the least recently used, was not evicted")
	}
	for _, name := range []string{"a", "c", "d"} {
		if !cached(t, m, layers[name]) {
			t.Errorf("%s was evicted, though more recently used than b", name)
		}
	}
	u := usage(t, m)
	if u.Bytes > u.HighBytes {
		t.Errorf("cache at %d bytes, above the high watermark %d", u.Bytes, u.HighBytes)
	}
	if files := verifyBlobFiles(t, m.cfg.DataDir); int64(files) != u.Blobs {
		t.Errorf("%d files on disk, %d indexed", files, u.Blobs)
	}

	// Pulling the evicted image again fetches only what was evicted.
	before := up.BlobGETs(layers["b"])
	pullAll(t, m, "library/b:latest")
	if got := up.BlobGETs(layers["b"]); got != before+1 {
		t.Errorf("re-pull of b fetched its layer %d times", got-before)
	}
	for _, name := range []string{"a", "c", "d"} {
		if up.BlobGETs(layers[name]) != 1 {
			t.Errorf("layer of %s fetched %d times", name, up.BlobGETs(layers[name]))
		}
	}
}

// TestPinnedIndexSurvivesChurn: a pinned multi-arch image keeps its index,
// child manifests, configs and layers through heavy eviction.
func TestPinnedIndexSurvivesChurn(t *testing.T) {
	up := testupstream.Start(t)
	idx := up.PushRandomIndex(t, "library/pinned", "1",
		[]v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}, 2, 256<<10)
	m := budgetMirror(t, up, fmt.Sprint(3*mib))
	pullAll(t, m, "library/pinned:1")
	res, err := adminClient(t, m).PinRef(context.Background(), "pinned:1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Missing != 0 || res.Blobs != 7 { // index, 2 manifests, 2 configs, 4 layers... minus shared none
		if res.Blobs < 7 {
			t.Fatalf("pin covers %d blobs (%d missing), want the whole graph", res.Blobs, res.Missing)
		}
	}
	graph, err := m.app.cache.Ops.Closure(context.Background(), testupstream.Digest(t, idx), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8; i++ {
		repo := fmt.Sprintf("library/churn%d", i)
		up.PushLargeBlobImage(t, repo, "latest", mib)
		pullAll(t, m, repo+":latest")
	}
	gc(t, m)
	for _, d := range graph {
		if !cached(t, m, d) {
			t.Fatalf("pinned blob %s was evicted", d)
		}
	}
	u := usage(t, m)
	if u.Bytes > u.HighBytes || u.Evicted == 0 {
		t.Fatalf("after churn: %d bytes (high %d), %d evicted", u.Bytes, u.HighBytes, u.Evicted)
	}
	up.SetDown(true) // the pinned image is whole: it pulls with upstream gone
	if got := pullAll(t, m, "library/pinned@"+testupstream.Digest(t, idx).String()); got != testupstream.Digest(t, idx) {
		t.Fatalf("pinned pull: %s", got)
	}
}

// TestReadInProgressSurvivesEviction: a client halfway through a cached
// blob keeps receiving every byte after eviction deletes the file.
func TestReadInProgressSurvivesEviction(t *testing.T) {
	up := testupstream.Start(t)
	layers := map[string]digest.Digest{}
	for _, name := range []string{"a", "b", "c", "d"} {
		_, layers[name] = up.PushLargeBlobImage(t, "library/"+name, "latest", 2*mib)
	}
	m := budgetMirror(t, up, fmt.Sprint(7*mib))
	for _, name := range []string{"a", "b", "c"} {
		pullAll(t, m, "library/"+name+":latest")
	}
	resp, first := startDownload(t, m.url+"/v2/library/a/blobs/"+layers["a"].String(), 1)
	defer resp.Body.Close()
	pullAll(t, m, "library/b:latest") // make a the least recently used
	pullAll(t, m, "library/c:latest")
	pullAll(t, m, "library/d:latest")
	gc(t, m)
	if cached(t, m, layers["a"]) {
		t.Fatal("a was not evicted; the test proves nothing")
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading on after eviction: %v", err)
	}
	if got := digest.FromBytes(append(first, rest...)); got != layers["a"] {
		t.Fatalf("client got %d bytes with digest %s", len(rest)+1, got)
	}
}

// TestFillInProgressNotEvicted: eviction passes that run while a fill is
// downloading leave it alone; it commits and is served whole.
func TestFillInProgressNotEvicted(t *testing.T) {
	up := testupstream.Start(t)
	_, big := up.PushLargeBlobImage(t, "library/big", "latest", 2*mib)
	gate := up.Gate(big).SetHeadBytes(mib)
	m := budgetMirror(t, up, fmt.Sprint(3*mib))
	resp, _ := startDownload(t, m.url+"/v2/library/big/blobs/"+big.String(), 1)
	defer resp.Body.Close()
	for i := 0; i < 3; i++ {
		repo := fmt.Sprintf("library/churn%d", i)
		up.PushLargeBlobImage(t, repo, "latest", mib)
		pullAll(t, m, repo+":latest")
		gc(t, m)
	}
	gate.Open()
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatalf("the fill's client: %v", err)
	}
	eventually(t, "the fill to commit", func() bool { return cached(t, m, big) })
	verifyBlobFiles(t, m.cfg.DataDir)
}

// TestDiskFullDuringFill runs the cache on a 6 MiB tmpfs (the index on a
// bind mount beside it). A fill that hits ENOSPC evicts and completes; a
// blob larger than the whole disk is streamed to its client from upstream,
// verified, and nothing partial is left.
func TestDiskFullDuringFill(t *testing.T) {
	realclient.RequireRoot(t, "mounting a tmpfs")
	dataDir, indexDir := t.TempDir(), t.TempDir()
	mount := func(args ...string) {
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Skipf("mount %v: %v: %s", args, err, out) // not allowed in this sandbox
		}
	}
	mount("-t", "tmpfs", "-o", "size=6m", "tmpfs", dataDir)
	t.Cleanup(func() { exec.Command("umount", "-l", dataDir).Run() })
	os.MkdirAll(filepath.Join(dataDir, "index"), 0o755)
	mount("--bind", indexDir, filepath.Join(dataDir, "index"))
	t.Cleanup(func() { exec.Command("umount", "-l", filepath.Join(dataDir, "index")).Run() })

	up := testupstream.Start(t)
	_, a := up.PushLargeBlobImage(t, "library/a", "latest", 2*mib)
	_, b := up.PushLargeBlobImage(t, "library/b", "latest", 3*mib)
	_, c := up.PushLargeBlobImage(t, "library/c", "latest", 2*mib)
	_, huge := up.PushLargeBlobImage(t, "library/huge", "latest", 8*mib)
	m := startMirror(t, up, func(cfg *config) {
		cfg.DataDir = dataDir
		cfg.Cache.MinFree = "0"
	})
	blob := func(repo string, d digest.Digest) {
		t.Helper()
		resp, body := get(t, http.MethodGet, m.url+"/v2/"+repo+"/blobs/"+d.String())
		if resp.StatusCode != 200 || digest.FromBytes(body) != d {
			t.Fatalf("%s: status %d, %d bytes, digest %s", repo, resp.StatusCode, len(body), digest.FromBytes(body))
		}
	}
	blob("library/a", a)
	blob("library/b", b)
	eventually(t, "b to be cached", func() bool { return cached(t, m, b) })
	blob("library/c", c) // 2 MiB more does not fit: evict, then commit
	eventually(t, "c to be cached", func() bool { return cached(t, m, c) })
	if cached(t, m, a) {
		t.Error("the disk filled, yet the least recently used blob stayed")
	}
	blob("library/huge", huge) // can never fit: streamed, not cached
	if cached(t, m, huge) {
		t.Fatal("an 8 MiB blob was cached on a 6 MiB disk")
	}
	eventually(t, "tmp/ to empty", func() bool { return len(tmpFiles(t, dataDir)) == 0 })
	blob("library/huge", huge) // again, while the disk is known to be full
	verifyBlobFiles(t, dataDir)
}

// TestGCAndDuCommands runs the CLI against a data dir a server holds
// (through its HTTP API) and against a free one (directly).
func TestGCAndDuCommands(t *testing.T) {
	up := testupstream.Start(t)
	for _, name := range []string{"a", "b", "c"} {
		up.PushLargeBlobImage(t, "library/"+name, "latest", mib)
	}
	m := budgetMirror(t, up, fmt.Sprint(4*mib))
	for _, name := range []string{"a", "b", "c"} {
		pullAll(t, m, "library/"+name+":latest")
	}
	run := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := newCLI(&out, &errOut).Run(append([]string{"regmirror"}, args...)); err != nil {
			t.Fatalf("regmirror %v: %v\n%s", args, err, errOut.String())
		}
		return out.String()
	}
	du := run("du", "--data-dir", m.cfg.DataDir, "--server", m.url)
	for _, want := range []string{"3.0 MiB", "budget 4.0 MiB", "docker.io/library/a"} {
		if !strings.Contains(du, want) {
			t.Errorf("du through the server lacks %q:\n%s", want, du)
		}
	}
	out := run("gc", "--data-dir", m.cfg.DataDir, "--server", m.url, "--log-level", "error")
	if !strings.Contains(out, "evicted 0 blobs") {
		t.Errorf("gc under budget: %s", out)
	}
	// --server is the cache asked, even when --data-dir names a free (here:
	// no) data dir: never a new empty cache reported as the server's.
	elsewhere := filepath.Join(t.TempDir(), "data")
	if out, err := runCLIErr("du", "--data-dir", elsewhere, "--server", m.url); err == nil || !strings.Contains(err.Error(), "management token") {
		t.Errorf("du --server with another data dir: %v\n%s", err, out)
	}
	if _, err := os.Stat(elsewhere); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("du --server made a data dir: %v", err)
	}
	if _, err := runCLIErr("gc", "--data-dir", m.cfg.DataDir, "--server", m.url, "--older-than", "30d"); err == nil || !strings.Contains(err.Error(), "goes with --s3") {
		t.Errorf("gc --older-than without --s3: %v, want it refused (it would evict by the budget instead)", err)
	}
	out = run("pin", "--data-dir", m.cfg.DataDir, "--server", m.url, "library/a")
	if !strings.Contains(out, "pinned docker.io/library/a:latest") {
		t.Errorf("pin: %s", out)
	}
	if !strings.Contains(run("du", "--data-dir", m.cfg.DataDir, "--server", m.url), "(1 pins)") {
		t.Error("du does not count the pin")
	}
	m.stop()
	// The data dir is free now: gc opens it itself, with a smaller budget;
	// the pinned image stays.
	out = run("gc", "--data-dir", m.cfg.DataDir, "--max-size", fmt.Sprint(2*mib), "--log-level", "error")
	if !strings.Contains(out, "evicted") || strings.Contains(out, "evicted 0 blobs") {
		t.Errorf("gc over budget: %s", out)
	}
	if !strings.Contains(run("du", "--data-dir", m.cfg.DataDir, "--log-level", "error"), "docker.io/library/a") {
		t.Error("gc evicted the pinned image")
	}
	out = run("unpin", "--data-dir", m.cfg.DataDir, "--log-level", "error", "library/a")
	if !strings.Contains(out, "unpinned docker.io/library/a:latest") {
		t.Errorf("unpin: %s", out)
	}
	var u admin.Usage
	du = run("du", "--data-dir", m.cfg.DataDir, "--max-size", fmt.Sprint(2*mib), "--log-level", "error")
	if !strings.Contains(du, "budget 2.0 MiB") {
		t.Errorf("du after gc:\n%s", du)
	}
	_ = json.Unmarshal(nil, &u)
}

// TestConfigPins: images in the config's pin list are fetched at startup
// when not cached, pinned, and survive eviction; a restart pins what the
// cache holds.
func TestConfigPins(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/keep", "1", 2, 512<<10)
	dataDir := t.TempDir()
	withPins := func(c *config) {
		c.DataDir = dataDir
		c.Pin = []string{"keep:1"}
		c.Cache.MaxSize = fmt.Sprint(2 * mib)
		c.Cache.MinFree = "0"
	}
	m := startMirror(t, up, withPins)
	pinned := func() bool {
		imgs, err := adminClient(t, m).Images(context.Background())
		if err != nil {
			return false
		}
		for _, im := range imgs {
			if im.Ref == "docker.io/library/keep:1" && im.Pinned {
				return true
			}
		}
		return false
	}
	eventually(t, "the config pin to be fetched and applied", pinned)
	for i := 0; i < 4; i++ {
		repo := fmt.Sprintf("library/churn%d", i)
		up.PushLargeBlobImage(t, repo, "latest", mib)
		pullAll(t, m, repo+":latest")
	}
	gc(t, m)
	for _, d := range testupstream.LayerDigests(t, img) {
		if !cached(t, m, d) {
			t.Fatalf("layer %s of a config-pinned image was evicted", d)
		}
	}

	// An image already cached (pulled before it was in the pin list) is
	// pinned from the cache alone, with upstream gone.
	m.stop()
	dataDir = t.TempDir()
	m = startMirror(t, up, func(c *config) { c.DataDir = dataDir })
	pullAll(t, m, "library/keep:1")
	m.stop()
	up.SetDown(true)
	m = startMirror(t, up, withPins)
	eventually(t, "the config pin to be applied from the cache", pinned)
}

// TestUnpinADigestPin: a pin named by a digest (import pins an image it has
// no name for under its digest) is removed by unpin with that digest, not
// taken for the image docker.io/library/sha256; so is the pin a preload
// killed midway left, by its name. The staging pins of a large pin a client
// left half sent go when the data dir is next opened.
func TestUnpinADigestPin(t *testing.T) {
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.LogLevel = "warn"
	if err := cfg.finish(); err != nil {
		t.Fatal(err)
	}
	log, err := newLogger(cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	st, err := openStack(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("an untagged image")
	// And the pin a preload killed midway left (airgap.PreloadingSuffix),
	// and the staging pins a client killed while it sent a large pin in
	// parts left (admin.CutPinning), of an image and of a preload, and
	// as a client of the previous release named them.
	preloading := "docker.io/library/app:1" + airgap.PreloadingSuffix
	const staging = " (pinning 0123456789abcdef)"
	pinning := []string{"docker.io/library/app:1" + staging, preloading + staging, "docker.io/library/app:1 (pinning)"}
	for _, name := range append([]string{d.String(), preloading}, pinning...) {
		if err := st.Ops.Pin(context.Background(), name, []digest.Digest{d}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// The staging pins are gone as the data dir opens again (no run of
	// a client can be going on then); their names still parse for unpin.
	for _, name := range []string{"app:1" + staging, "app:1" + airgap.PreloadingSuffix + staging, "app:1 (pinning)"} {
		if out, err := runCLIErr("unpin", "--data-dir", cfg.DataDir, "--log-level", "warn", name); err == nil || !strings.Contains(err.Error(), "no such pin") {
			t.Fatalf("unpin %s of a staging pin left by a killed run: %v, want no such pin (removed at open)\n%s", name, err, out)
		}
	}
	for _, name := range []string{d.String(), "app:1" + airgap.PreloadingSuffix} {
		if out, err := runCLIErr("unpin", "--data-dir", cfg.DataDir, "--log-level", "warn", name); err != nil || !strings.Contains(out, "unpinned ") {
			t.Fatalf("unpin %s: %v\n%s", name, err, out)
		}
	}
	if du := runCLI(t, "du", "--data-dir", cfg.DataDir, "--log-level", "warn"); !strings.Contains(du, "(0 pins)") {
		t.Errorf("du after the unpin:\n%s", du)
	}
}

// TestLargePinThroughTheServer: a preload of a large image through a
// running server pins more digests than the server reads in one request
// body (64 KiB, ~880 digests; before: a 413 and no pin). The client sends
// it in parts and the server ends with exactly one pin holding them all.
func TestLargePinThroughTheServer(t *testing.T) {
	m := startMirror(t, nil)
	var ds []digest.Digest
	for i := range 2000 {
		ds = append(ds, digest.FromString(fmt.Sprint("layer ", i)))
	}
	const name = "docker.io/library/big:1"
	if err := adminClient(t, m).Pin(t.Context(), name, ds); err != nil {
		t.Fatalf("pin of %d digests through the server: %v", len(ds), err)
	}
	n := 0
	if err := m.app.cache.Store.Pins(func(pin string, got []digest.Digest) error {
		n++
		if pin != name || len(got) != len(ds) {
			t.Errorf("pin %q with %d digests, want %q with %d", pin, len(got), name, len(ds))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d pins, want 1 (the parts' pin goes)", n)
	}
}
