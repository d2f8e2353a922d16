package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/realclient"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// Issue 8, items 4, 5, 6 and 9: fills and pass-throughs against a hostile or
// merely unlucky upstream and disk.

func blobURL(m *mirror, repo string, d digest.Digest) string {
	return m.url + "/v2/" + repo + "/blobs/" + d.String()
}

// TestBlobLargerThanBudget (item 4): with a byte budget, a blob larger than
// the budget's low watermark is streamed to its client, verified, without
// caching it and without evicting anything (counted in a metric), with one
// upstream GET.
func TestBlobLargerThanBudget(t *testing.T) {
	up := testupstream.Start(t)
	small := map[string]digest.Digest{}
	for _, name := range []string{"a", "b", "c"} {
		_, small[name] = up.PushLargeBlobImage(t, "library/"+name, "latest", mib)
	}
	_, big := up.PushLargeBlobImage(t, "library/big", "latest", 8*mib)
	m := budgetMirror(t, up, "6MB") // low watermark 5.1 MB: 8 MiB can never fit
	for _, name := range []string{"a", "b", "c"} {
		pullAll(t, m, "library/"+name+":latest")
	}
	resp, body := get(t, http.MethodGet, blobURL(m, "library/big", big))
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != big {
		t.Fatalf("big blob: status %d, %d bytes", resp.StatusCode, len(body))
	}
	if c := resp.Header.Get("X-Regmirror-Cache"); c != "bypass" {
		t.Errorf("cache header %q, want bypass", c)
	}
	gc(t, m)
	if cached(t, m, big) {
		t.Fatal("a blob larger than the budget was cached")
	}
	assertStillServed(t, m, up, small)
	if n := up.BlobGETs(big); n != 1 {
		t.Errorf("%d upstream GETs of the big blob", n)
	}
	if v := metricValue(t, m, "regmirror_passthroughs_total"); v != 1 {
		t.Errorf("passthroughs metric %v, want 1", v)
	}
}

// assertStillServed proves the blobs are still cached, and served with
// upstream gone.
func assertStillServed(t *testing.T, m *mirror, up *testupstream.Server, blobs map[string]digest.Digest) {
	t.Helper()
	for name, d := range blobs {
		if !cached(t, m, d) {
			t.Fatalf("%s was evicted", name)
		}
	}
	up.SetDown(true)
	defer up.SetDown(false)
	for name, d := range blobs {
		resp, body := get(t, http.MethodGet, blobURL(m, "library/"+name, d))
		if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != d {
			t.Fatalf("%s with upstream down: status %d, %d bytes", name, resp.StatusCode, len(body))
		}
	}
}

// tmpfsDataDir mounts a tmpfs of size as a data dir (the index on a bind
// mount beside it, as TestDiskFullDuringFill does); it skips where mounting
// is not allowed.
func tmpfsDataDir(t *testing.T, size string) string {
	realclient.RequireRoot(t, "mounting a tmpfs")
	dataDir, indexDir := t.TempDir(), t.TempDir()
	mount := func(args ...string) {
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Skipf("mount %v: %v: %s", args, err, out)
		}
	}
	mount("-t", "tmpfs", "-o", "size="+size, "tmpfs", dataDir)
	t.Cleanup(func() { exec.Command("umount", "-l", dataDir).Run() })
	os.MkdirAll(filepath.Join(dataDir, "index"), 0o755)
	mount("--bind", indexDir, filepath.Join(dataDir, "index"))
	t.Cleanup(func() { exec.Command("umount", "-l", filepath.Join(dataDir, "index")).Run() })
	return dataDir
}

// TestBlobLargerThanDisk (item 4): without a budget, on a 12 MiB disk, a
// 16 MiB blob (more than free space plus everything evictable) is streamed
// without caching and evicts nothing, where it used to empty the cache.
func TestBlobLargerThanDisk(t *testing.T) {
	dataDir := tmpfsDataDir(t, "12m")
	up := testupstream.Start(t)
	small := map[string]digest.Digest{}
	for _, name := range []string{"a", "b"} {
		_, small[name] = up.PushLargeBlobImage(t, "library/"+name, "latest", 2*mib)
	}
	_, huge := up.PushLargeBlobImage(t, "library/huge", "latest", 16*mib)
	m := startMirror(t, up, func(c *config) {
		c.DataDir = dataDir
		c.Cache.MinFree = "0"
	})
	for name, d := range small {
		resp, body := get(t, http.MethodGet, blobURL(m, "library/"+name, d))
		if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != d {
			t.Fatalf("%s: status %d", name, resp.StatusCode)
		}
		eventually(t, name+" to be cached", func() bool { return cached(t, m, d) })
	}
	resp, body := get(t, http.MethodGet, blobURL(m, "library/huge", huge))
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != huge {
		t.Fatalf("huge blob: status %d, %d bytes", resp.StatusCode, len(body))
	}
	gc(t, m)
	if cached(t, m, huge) {
		t.Fatal("a 16 MiB blob was cached on a 12 MiB disk")
	}
	eventually(t, "tmp/ to empty", func() bool { return len(tmpFiles(t, dataDir)) == 0 })
	assertStillServed(t, m, up, small)
	if v := metricValue(t, m, "regmirror_passthroughs_total"); v != 1 {
		t.Errorf("passthroughs metric %v, want 1", v)
	}
}

// TestPassThroughSharedByClients (item 5): 20 clients of a blob that is not
// cached share one upstream download; each body is verified; a client that
// leaves early does not stop the others; with a corrupt upstream no client
// completes a body.
func TestPassThroughSharedByClients(t *testing.T) {
	up := testupstream.Start(t)
	const size = 12 * mib // more than the shared window (8 MiB): it wraps
	_, d := up.PushLargeBlobImage(t, "library/big", "latest", size)
	_, bad := up.PushLargeBlobImage(t, "library/bad", "latest", size)
	m := budgetMirror(t, up, "4MB") // too small: every client is passed through

	sharedByTwenty(t, m, up, "library/big", d)
	if cached(t, m, d) {
		t.Fatal("cached")
	}

	// Corrupt upstream: every client's body ends short.
	up.CorruptBlobs(true)
	gate := up.Gate(bad).SetHeadBytes(mib)
	const few = 5
	var wg sync.WaitGroup
	resps := make([]*http.Response, few)
	firsts := make([][]byte, few)
	errs := make([]error, few)
	for i := 0; i < few; i++ {
		resps[i], firsts[i] = startDownload(t, blobURL(m, "library/bad", bad), 1)
	}
	gate.Open()
	ns := make([]int64, few)
	for i := 0; i < few; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer resps[i].Body.Close()
			ns[i], errs[i] = io.Copy(io.Discard, resps[i].Body)
		}()
	}
	wg.Wait()
	for i := 0; i < few; i++ {
		if errs[i] == nil || ns[i]+1 >= size {
			t.Fatalf("client %d of a corrupt blob: %d bytes, err %v", i, ns[i]+1, errs[i])
		}
	}
	if n := up.BlobGETs(bad); n != 1 {
		t.Fatalf("%d upstream GETs of the corrupt blob for %d clients", n, few)
	}
}

// sharedByTwenty has 20 clients download blob d of repo, none of them able
// to finish before all have started (upstream holds after the first MiB),
// the first leaving early; it checks that the others got the blob whole
// and that upstream sent it once.
func sharedByTwenty(t *testing.T, m *mirror, up *testupstream.Server, repo string, d digest.Digest) {
	t.Helper()
	const clients = 20
	gate := up.Gate(d).SetHeadBytes(mib)
	resps := make([]*http.Response, clients)
	firsts := make([][]byte, clients)
	for i := range resps {
		resps[i], firsts[i] = startDownload(t, blobURL(m, repo, d), 1)
	}
	resps[0].Body.Close() // gone early
	gate.Open()
	var wg sync.WaitGroup
	errs := make([]error, clients)
	for i := 1; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer resps[i].Body.Close()
			dg := digest.Canonical.Digester() // hashed as it comes: 20 bodies are not held in memory
			dg.Hash().Write(firsts[i])
			n, err := io.Copy(dg.Hash(), resps[i].Body)
			if err == nil && dg.Digest() != d {
				err = fmt.Errorf("%d bytes with digest %s", n+1, dg.Digest())
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	if n := up.BlobGETs(d); n != 1 {
		t.Fatalf("%d upstream GETs for %d clients, want 1", n, clients)
	}
}

// TestPassThroughSharedOnFullDisk (item 5): on a disk too small for the
// blob, 20 clients cost one upstream download (it used to be one for the
// fill plus one per client once the disk filled).
func TestPassThroughSharedOnFullDisk(t *testing.T) {
	dataDir := tmpfsDataDir(t, "8m")
	up := testupstream.Start(t)
	_, d := up.PushLargeBlobImage(t, "library/big", "latest", 12*mib)
	m := startMirror(t, up, func(c *config) {
		c.DataDir = dataDir
		c.Cache.MinFree = "0"
	})
	sharedByTwenty(t, m, up, "library/big", d)
	if cached(t, m, d) {
		t.Fatal("a 12 MiB blob was cached on an 8 MiB disk")
	}
	eventually(t, "tmp/ to empty", func() bool { return len(tmpFiles(t, dataDir)) == 0 })
}
