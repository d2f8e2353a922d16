package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testupstream"
)

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// regmirrorBinary builds the command once per test run, for tests that
// need a real process to kill.
func regmirrorBinary(t *testing.T) string {
	t.Helper()
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "regmirror-bin-")
		if err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(dir, "regmirror")
		out, err := exec.Command("go", "build", "-o", binaryPath, ".").CombinedOutput()
		if err != nil {
			binaryErr = err
			t.Logf("go build: %s", out)
		}
	})
	if binaryErr != nil {
		t.Fatalf("building regmirror: %v", binaryErr)
	}
	return binaryPath
}

var listenLine = regexp.MustCompile(`listen=(\S+)`)

// startProcess runs `regmirror serve` and returns it with its address,
// read from its first log line.
func startProcess(t *testing.T, args ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(regmirrorBinary(t), append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listenLine.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
			t.Log(sc.Text())
		}
	}()
	select {
	case a := <-addr:
		return cmd, "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatal("regmirror did not start")
	}
	return nil, ""
}

// TestCrashDuringFill kills regmirror with SIGKILL while a blob is half
// downloaded; a restart on the same data dir leaves no partial blob, and
// the next pull is correct.
func TestCrashDuringFill(t *testing.T) {
	const size = 4 << 20
	up := testupstream.Start(t)
	_, big := up.PushLargeBlobImage(t, "library/big", "latest", size)
	gate := up.Gate(big).SetHeadBytes(1 << 20)
	dataDir := t.TempDir()
	args := []string{"--data-dir", dataDir, "--upstream-url", up.URL(), "--log-level", "info"}

	cmd, url := startProcess(t, args...)
	resp, err := http.Get(url + "/v2/library/big/blobs/" + big.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if len(tmpFiles(t, dataDir)) == 0 {
		t.Fatal("no download in progress under tmp/")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	resp.Body.Close()

	_, url = startProcess(t, args...)
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
