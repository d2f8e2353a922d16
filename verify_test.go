package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testupstream"
)

// flipCachedByte damages a cached blob in place, as bit rot does: same
// size, so neither a hit nor a restart's reconcile notices.
func flipCachedByte(t *testing.T, dataDir string, d digest.Digest) {
	t.Helper()
	path := filepath.Join(dataDir, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// fetchBlob GETs a blob through the mirror and says whether the body has
// the digest the mirror announced and was asked for.
func fetchBlob(t *testing.T, m *mirror, repo string, d digest.Digest) bool {
	t.Helper()
	resp, body := get(t, http.MethodGet, m.url+"/v2/"+repo+"/blobs/"+d.String())
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("GET blob %s: %s, digest header %q", d, resp.Status, resp.Header.Get("Docker-Content-Digest"))
	}
	return digest.FromBytes(body) == d
}

func cachedFileIs(t *testing.T, dataDir string, d digest.Digest) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "blobs", "sha256", d.Encoded()[:2], d.Encoded()))
	if err != nil {
		return false
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]) == d.Encoded()
}

// TestVerifyCommand: a flipped byte in a cached layer is served as is
// (right digest header, wrong bytes) until `regmirror verify` finds it.
// Through the running server verify removes it (exit status non-zero) and
// the next pull fetches it once; --repair fetches it again at once,
// verified, through the running server or, with none, through one it
// starts itself.
func TestVerifyCommand(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomOCIImage(t, "org/app", "v1", 3, 200<<10)
	layers := testupstream.LayerDigests(t, img)
	m := startMirror(t, up)
	pullAll(t, m, "org/app:v1")
	conf := writeTestConfig(t, m.cfg.DataDir, up.URL())

	// The damage is served as is: this is what verify is for.
	flipCachedByte(t, m.cfg.DataDir, layers[0])
	if fetchBlob(t, m, "org/app", layers[0]) {
		t.Fatal("the damaged file was not served damaged; the test would prove nothing")
	}

	// Through the running server: found, removed, exit status says so.
	out, err := runCLIErr("verify", "--config", conf, "--server", m.url)
	if err == nil || !strings.Contains(out, "CORRUPT  "+layers[0].String()) || !strings.Contains(out, "docker.io/org/app") ||
		!strings.Contains(out, "1 corrupt") || !strings.Contains(out, "verified 5 blobs") {
		t.Fatalf("verify: err %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(m.cfg.DataDir, "blobs", "sha256", layers[0].Encoded()[:2], layers[0].Encoded())); err == nil {
		t.Fatal("verify kept the corrupt file")
	}
	before := up.BlobGETs(layers[0])
	if !fetchBlob(t, m, "org/app", layers[0]) {
		t.Fatal("after verify the layer is still served damaged")
	}
	if got := up.BlobGETs(layers[0]) - before; got != 1 {
		t.Fatalf("the pull after verify cost %d upstream GETs, want 1", got)
	}
	eventually(t, "the refetched layer is cached", func() bool { return cachedFileIs(t, m.cfg.DataDir, layers[0]) })

	// --repair through the running server.
	flipCachedByte(t, m.cfg.DataDir, layers[1])
	before = up.BlobGETs(layers[1])
	out = runCLI(t, "verify", "--config", conf, "--server", m.url, "--repair", "--rate", "0")
	if !strings.Contains(out, "repaired "+layers[1].String()+" from docker.io/org/app") {
		t.Fatalf("verify --repair:\n%s", out)
	}
	if got := up.BlobGETs(layers[1]) - before; got != 1 {
		t.Fatalf("repair cost %d upstream GETs, want 1", got)
	}
	eventually(t, "the repaired layer is cached", func() bool { return cachedFileIs(t, m.cfg.DataDir, layers[1]) })
	before = up.BlobGETs(layers[1])
	if !fetchBlob(t, m, "org/app", layers[1]) || up.BlobGETs(layers[1]) != before {
		t.Fatal("the repaired layer is not served from the cache, intact")
	}

	// --repair without a server: verify starts one on the data dir.
	m.stop()
	flipCachedByte(t, m.cfg.DataDir, layers[2])
	before = up.BlobGETs(layers[2])
	out = runCLI(t, "verify", "--config", conf, "--repair")
	if !strings.Contains(out, "repaired "+layers[2].String()) || !strings.Contains(out, "in "+m.cfg.DataDir) {
		t.Fatalf("verify --repair on the data dir:\n%s", out)
	}
	if got := up.BlobGETs(layers[2]) - before; got != 1 {
		t.Fatalf("repair cost %d upstream GETs, want 1", got)
	}
	if n := verifyBlobFiles(t, m.cfg.DataDir); n != 5 {
		t.Fatalf("%d intact blob files, want 5 (manifest, config, 3 layers)", n)
	}
	out = runCLI(t, "verify", "--config", conf)
	if !strings.Contains(out, "verified 5 blobs") || !strings.Contains(out, ": 0 corrupt") {
		t.Fatalf("verify of a repaired cache:\n%s", out)
	}

	// A file gone while the mirror was stopped (the clean start trusts the
	// index, so its record stays): reported missing, and repaired.
	if err := os.Remove(filepath.Join(m.cfg.DataDir, "blobs", "sha256", layers[0].Encoded()[:2], layers[0].Encoded())); err != nil {
		t.Fatal(err)
	}
	before = up.BlobGETs(layers[0])
	out = runCLI(t, "verify", "--config", conf, "--repair")
	if !strings.Contains(out, "MISSING  "+layers[0].String()) || !strings.Contains(out, "1 missing") || !strings.Contains(out, "repaired "+layers[0].String()) {
		t.Fatalf("verify --repair with a file missing:\n%s", out)
	}
	if got := up.BlobGETs(layers[0]) - before; got != 1 {
		t.Fatalf("repairing the missing file cost %d upstream GETs, want 1", got)
	}
	if n := verifyBlobFiles(t, m.cfg.DataDir); n != 5 {
		t.Fatalf("%d intact blob files after the repair, want 5", n)
	}
}

// TestScrubFindsCorruptBlob: the background scrub, driven by a trigger in
// place of cache.scrub_interval's ticker, finds a flipped byte, counts it
// in /metrics and drops the blob, so the next client gets correct bytes
// for one upstream GET.
func TestScrubFindsCorruptBlob(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomOCIImage(t, "org/app", "v1", 2, 300<<10)
	layer := testupstream.LayerDigests(t, img)[1]
	tick := make(chan time.Time)
	m := startMirror(t, up, func(c *config) { c.Cache.scrubTrigger = tick })
	pullAll(t, m, "org/app:v1")
	flipCachedByte(t, m.cfg.DataDir, layer)

	// The trigger is unbuffered: the second send is taken only once the
	// first pass has ended.
	tick <- time.Now()
	tick <- time.Now()
	if v := metricValue(t, m, "regmirror_scrub_failed_total"); v != 1 {
		t.Fatalf("regmirror_scrub_failed_total = %v, want 1", v)
	}
	if v := metricValue(t, m, "regmirror_scrub_verified_total"); v < 4 {
		t.Fatalf("regmirror_scrub_verified_total = %v, want at least the 4 blobs of a pass", v)
	}
	before := up.BlobGETs(layer)
	if !fetchBlob(t, m, "org/app", layer) {
		t.Fatal("the layer the scrub found corrupt was served damaged")
	}
	if got := up.BlobGETs(layer) - before; got != 1 {
		t.Fatalf("the next pull cost %d upstream GETs, want 1", got)
	}
}

// TestDataDirFilesPrivate: after a fill (blobs, index writes, the admin
// token) nothing under the data dir is open to other users.
func TestDataDirFilesPrivate(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomOCIImage(t, "org/app", "v1", 2, 64<<10)
	m := startMirror(t, up)
	pullAll(t, m, "org/app:v1")
	m.stop() // Badger writes its last files at close
	var n int
	err := filepath.WalkDir(m.cfg.DataDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v", path, fi.Mode().Perm())
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("only %d entries under the data dir", n)
	}
}
