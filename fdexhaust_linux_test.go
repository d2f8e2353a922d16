package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/regmirror/regmirror/internal/testprocess"
	"github.com/regmirror/regmirror/internal/testpull"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// TestDescriptorExhaustion (issue 8 item 2): a real regmirror process whose
// descriptor limit is lowered to a few more than it has open gets more
// idle connections than it has descriptors left. It must not exit (it did:
// accept4's EMFILE ended the serve loop), must warn once per burst and not
// per connection, must finish a download that was in flight, and must serve
// again once the connections are gone.
func TestDescriptorExhaustion(t *testing.T) {
	const size = 2 << 20
	up := testupstream.Start(t)
	_, big := up.PushLargeBlobImage(t, "library/big", "latest", size)
	gate := up.Gate(big).SetHeadBytes(64 << 10)
	cfg := filepath.Join(t.TempDir(), "regmirror.toml")
	// No connection caps: the point is to run out of descriptors.
	if err := os.WriteFile(cfg, []byte("[server]\nmax_connections = -1\nmax_connections_per_ip = -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := testprocess.Serve(t, testing.Verbose(), "--config", cfg, "--data-dir", t.TempDir(), "--upstream-url", up.URL())
	pid := proc.Cmd.Process.Pid

	// A download in flight, held by the gate.
	inflight, first := startDownload(t, proc.URL+"/v2/library/big/blobs/"+big.String(), 1000)
	defer inflight.Body.Close()

	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	limit := uint64(len(fds) + 16)
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: limit}, nil); err != nil {
		t.Fatalf("prlimit: %v", err)
	}
	t.Logf("regmirror has %d descriptors open; limit lowered to %d", len(fds), limit)

	const idle = 200
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	host := strings.TrimPrefix(proc.URL, "http://")
	for i := 0; i < idle; i++ {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	warned := func() int {
		n := 0
		for _, l := range strings.Split(proc.Logs(), "\n") {
			if strings.Contains(l, "cannot accept connections") {
				n++
			}
		}
		return n
	}
	eventually(t, "regmirror to run out of descriptors", func() bool { return warned() > 0 })
	// Let the backoff go round a few times (it doubles up to 1s).
	time.Sleep(1500 * time.Millisecond)
	wantAlive(t, pid)

	for _, c := range conns {
		c.Close()
	}
	conns = nil
	gate.Open()
	h := sha256.New()
	h.Write(first)
	if _, err := io.Copy(h, inflight.Body); err != nil {
		t.Fatalf("the download in flight was cut: %v", err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != big.String() {
		t.Fatalf("the download in flight got %s, want %s", got, big)
	}

	// New connections: the keep-alive one of the download in flight
	// would not prove that the server accepts again.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	eventually(t, "regmirror to serve again", func() bool {
		resp, err := client.Get(proc.URL + "/metrics")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	wantAlive(t, pid)
	resp, err := client.Get(proc.URL + "/v2/library/big/blobs/" + big.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || fmt.Sprintf("sha256:%x", sha256.Sum256(body)) != big.String() {
		t.Fatalf("after the exhaustion: %d, %d bytes", resp.StatusCode, len(body))
	}

	acceptErrors := testpull.Metric(t, proc.URL, "regmirror_accept_errors_total")
	if w := warned(); w != 1 || acceptErrors < 2 {
		t.Errorf("%d warnings for %v accept errors: want one per burst, not one per error", w, acceptErrors)
	}
}

// wantAlive fails unless process pid is running (a zombie has exited).
func wantAlive(t *testing.T, pid int) {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("regmirror exited: %v", err)
	}
	// pid (comm) state ...: the state follows the last ')'.
	if s := string(stat); strings.HasPrefix(strings.TrimSpace(s[strings.LastIndexByte(s, ')')+1:]), "Z") {
		t.Fatal("regmirror exited")
	}
}
