// Package tests3 runs a real S3 server for tests: versitygw (posix backend)
// on a loopback port, in the test's temp directory. It is looked up on PATH
// and in $(go env GOPATH)/bin; scripts/test.sh installs it when missing
// (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0). When it is
// missing a test skips, or fails when REGMIRROR_REQUIRE_CLIENTS=1.
package tests3

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/regmirror/regmirror/internal/testlog"
)

// Version is the versitygw release scripts/test.sh installs.
const Version = "v1.8.0"

const (
	AccessKey = "regmirror-test"
	SecretKey = "regmirror-test-secret-key"
)

// Server is a running versitygw. Endpoint is its http://127.0.0.1:port.
type Server struct {
	Endpoint string
	Dir      string // the posix backend's root (buckets are directories)

	bin  string
	addr string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// Binary finds versitygw, or skips (fails with REGMIRROR_REQUIRE_CLIENTS=1).
func Binary(tb testing.TB) string {
	tb.Helper()
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	var gopath string
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		gopath = strings.TrimSpace(string(out))
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "versitygw")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	msg := "versitygw not found: go install github.com/versity/versitygw/cmd/versitygw@" + Version + " (scripts/test.sh does)"
	if os.Getenv("REGMIRROR_REQUIRE_CLIENTS") == "1" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// Start runs versitygw on a free loopback port; Cleanup kills it.
func Start(tb testing.TB) *Server {
	tb.Helper()
	dir := tb.TempDir()
	s, err := Launch(Binary(tb), dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Kill)
	return s
}

// Launch runs versitygw (bin, see Binary) on a free loopback port with its
// data in dir, for servers shared by a package's tests (Kill it in
// TestMain).
func Launch(bin, dir string) (*Server, error) {
	s := &Server{bin: bin, Dir: dir}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.addr = ln.Addr().String()
	ln.Close()
	s.Endpoint = "http://" + s.addr
	return s, s.start()
}

func (s *Server) start() error {
	cmd := exec.Command(s.bin, "--port", s.addr, "posix", s.Dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+AccessKey, "ROOT_SECRET_ACCESS_KEY="+SecretKey)
	logs := &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return err
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("versitygw did not answer on %s: %v\n%s", s.addr, err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Pause stops the process (SIGSTOP): connections are accepted by the
// kernel but never answered, as with a hung store.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused process.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

// Kill ends the process (a paused one too) and waits for it.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Wait()
}

// Restart starts the server again on the same port and directory after
// Kill (the data survives, as a store that comes back).
func (s *Server) Restart() error {
	s.Kill()
	return s.start()
}

// ObjectPath is where the posix backend keeps bucket/key on disk.
func (s *Server) ObjectPath(bucket, key string) string {
	return filepath.Join(s.Dir, bucket, filepath.FromSlash(key))
}

func (s *Server) String() string { return fmt.Sprintf("versitygw %s (%s)", s.Endpoint, s.Dir) }
