// Package testprocess runs the regmirror command as a real process, for
// tests that must kill it and benchmarks that measure it from outside.
package testprocess

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// moduleRoot is the directory holding go.mod (the regmirror command).
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("testprocess: cannot locate the source")
	}
	return filepath.Join(filepath.Dir(file), "..", ".."), nil
}

// Binary builds the regmirror command once per process and returns its path.
func Binary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "regmirror-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "regmirror")
		cmd := exec.Command("go", "build", "-o", binary, ".")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatalf("testprocess: %v", buildErr)
	}
	return binary
}

// Process is a running `regmirror serve`.
type Process struct {
	Cmd *exec.Cmd
	URL string // http://127.0.0.1:port

	mu   sync.Mutex
	logs []string
	done chan struct{} // closed when the log stream ends
}

// Logs returns the log lines read so far.
func (p *Process) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.logs, "\n")
}

// Stop asks the process to shut down (SIGTERM), as an operator would, and
// waits until it has exited.
func (p *Process) Stop() error {
	if p.Cmd.ProcessState != nil {
		return nil
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	<-p.done
	return p.Cmd.Wait()
}

var listenAttr = regexp.MustCompile(`listen=(\S+)`)

// Serve starts `regmirror serve --listen 127.0.0.1:0 args...` and waits for
// its "serving" log line to learn the address. Its log goes to the test log
// when verbose is true. Cleanup kills it.
func Serve(tb testing.TB, verbose bool, args ...string) *Process {
	tb.Helper()
	args = append([]string{"serve", "--listen", "127.0.0.1:0", "--log-level", "info"}, args...)
	cmd := exec.Command(Binary(tb), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	tb.Cleanup(func() { p.Kill() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		defer close(p.done)
		for sc.Scan() {
			p.mu.Lock()
			p.logs = append(p.logs, sc.Text())
			p.mu.Unlock()
			if m := listenAttr.FindStringSubmatch(sc.Text()); m != nil && strings.Contains(sc.Text(), "serving") {
				select {
				case addr <- m[1]:
				default:
				}
			}
			if verbose {
				tb.Log(sc.Text())
			}
		}
	}()
	select {
	case a := <-addr:
		p.URL = "http://" + a
	case <-time.After(60 * time.Second):
		tb.Fatal("testprocess: regmirror did not start")
	}
	return p
}

// Kill ends the process at once (SIGKILL), as a crash would.
func (p *Process) Kill() {
	if p.Cmd.ProcessState == nil {
		p.Cmd.Process.Kill()
		p.Cmd.Wait()
	}
}

// PeakRSS reads the process's peak resident set size (VmHWM) in bytes.
func (p *Process) PeakRSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", p.Cmd.Process.Pid)
}
