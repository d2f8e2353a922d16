package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testprocess"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// TestCrashDuringFill kills regmirror with SIGKILL while a blob is half
// downloaded; a restart on the same data dir leaves no partial blob, and
// the next pull is correct.
func TestCrashDuringFill(t *testing.T) {
	const size = 4 << 20
	up := testupstream.Start(t)
	_, big := up.PushLargeBlobImage(t, "library/big", "latest", size)
	gate := up.Gate(big).SetHeadBytes(1 << 20)
	dataDir := t.TempDir()
	args := []string{"--data-dir", dataDir, "--upstream-url", up.URL()}

	proc := testprocess.Serve(t, testing.Verbose(), args...)
	resp, _ := startDownload(t, proc.URL+"/v2/library/big/blobs/"+big.String(), 1000)
	if len(tmpFiles(t, dataDir)) == 0 {
		t.Fatal("no download in progress under tmp/")
	}
	proc.Kill()
	resp.Body.Close()

	url := testprocess.Serve(t, testing.Verbose(), args...).URL
	if n := len(tmpFiles(t, dataDir)); n != 0 {
		t.Fatalf("%d partial downloads left under tmp/ after restart", n)
	}
	if blobFiles(t, dataDir)[big.Encoded()] {
		t.Fatal("a partial blob reached blobs/")
	}
	gate.Open()
	resp2, body := get(t, http.MethodGet, url+"/v2/library/big/blobs/"+big.String())
	if resp2.StatusCode != 200 || digest.FromBytes(body) != big {
		t.Fatalf("pull after restart: %d, digest %s", resp2.StatusCode, digest.FromBytes(body))
	}
	verifyBlobFiles(t, dataDir)
}

// TestRestartTrustsOnlyACleanStop: a clean stop (SIGTERM) leaves the
// clean-shutdown marker and the next start skips the reconcile (a junk name
// planted in blobs/ survives it); after a SIGKILL there is no marker and the
// next start reconciles fully before it serves (the junk is gone). Both
// serve the cached blob.
func TestRestartTrustsOnlyACleanStop(t *testing.T) {
	up := testupstream.Start(t)
	_, d := up.PushLargeBlobImage(t, "library/small", "latest", 64<<10)
	dataDir := t.TempDir()
	args := []string{"--data-dir", dataDir, "--upstream-url", up.URL()}
	marker := filepath.Join(dataDir, "clean-shutdown")
	junk := filepath.Join(dataDir, "blobs", "sha256", "junk")

	proc := testprocess.Serve(t, testing.Verbose(), args...)
	if resp, body := get(t, http.MethodGet, proc.URL+"/v2/library/small/blobs/"+d.String()); resp.StatusCode != 200 || digest.FromBytes(body) != d {
		t.Fatalf("first pull: %d", resp.StatusCode)
	}
	// Cached (a kill after the rename re-indexes the verified file).
	eventually(t, "blob file", func() bool { return blobFiles(t, dataDir)[d.Encoded()] })
	for _, tc := range []struct {
		stop      string
		wantTrust bool
	}{{"SIGKILL", false}, {"SIGTERM", true}, {"SIGKILL", false}} {
		if tc.stop == "SIGKILL" {
			proc.Kill()
		} else if err := proc.Stop(); err != nil {
			t.Fatalf("clean stop: %v\n%s", err, proc.Logs())
		}
		if _, err := os.Stat(marker); (err == nil) != tc.wantTrust {
			t.Fatalf("after %s: marker present = %v", tc.stop, err == nil)
		}
		if err := os.WriteFile(junk, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		proc = testprocess.Serve(t, testing.Verbose(), args...)
		logs := proc.Logs() // everything up to "serving"
		skipped, reconciled := strings.Contains(logs, "reconcile skipped"), strings.Contains(logs, "cache reconciled")
		if skipped != tc.wantTrust || reconciled == tc.wantTrust {
			t.Fatalf("start after %s: skipped=%v reconciled=%v\n%s", tc.stop, skipped, reconciled, logs)
		}
		if _, err := os.Stat(junk); (err == nil) != tc.wantTrust {
			t.Fatalf("start after %s: junk present = %v", tc.stop, err == nil)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("start after %s: the marker outlived the start", tc.stop)
		}
		if resp, body := get(t, http.MethodGet, proc.URL+"/v2/library/small/blobs/"+d.String()); resp.StatusCode != 200 || digest.FromBytes(body) != d {
			t.Fatalf("pull after %s: %d", tc.stop, resp.StatusCode)
		}
		os.Remove(junk)
	}
	if n := up.BlobGETs(d); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
}
