package main

import (
	"net/http"
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
