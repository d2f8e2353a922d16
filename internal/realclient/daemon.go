package realclient

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// daemon is a long-running child process with its log in a file.
type daemon struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{} // closed when the process has exited
	waitErr error
}

func startDaemon(t testing.TB, name, logPath string, env []string, bin string, args ...string) *daemon {
	t.Helper()
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("%s log: %v", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout = lf
	cmd.Stderr = lf
	daemonAttrs(cmd)
	fmt.Fprintf(lf, "+ %s\n", cmdline(bin, args))
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("start %s: %v", cmdline(bin, args), err)
	}
	d := &daemon{name: name, cmd: cmd, logPath: logPath, logFile: lf, done: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	return d
}

// waitReady polls probe until it succeeds, the daemon exits, or
// StartTimeout passes; the latter two fail the test with the log tail.
func (d *daemon) waitReady(t testing.TB, probe func() error) {
	t.Helper()
	deadline := time.Now().Add(StartTimeout)
	delay := 20 * time.Millisecond
	var last error
	for {
		select {
		case <-d.done:
			t.Fatalf("%s exited during start-up (%v); last probe error: %v\n--- %s (tail) ---\n%s",
				d.name, d.waitErr, last, d.logPath, logTail(d.logPath, 60))
		default:
		}
		if last = probe(); last == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v: %v\n--- %s (tail) ---\n%s",
				d.name, StartTimeout, last, d.logPath, logTail(d.logPath, 60))
		}
		time.Sleep(delay)
		if delay < 250*time.Millisecond {
			delay *= 2
		}
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs the process group.
func (d *daemon) stop(t testing.TB, grace time.Duration) {
	t.Helper()
	select {
	case <-d.done:
	default:
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(grace):
			t.Logf("realclient: %s did not stop within %v of SIGTERM; killing it", d.name, grace)
			_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			_ = d.cmd.Process.Kill()
			select {
			case <-d.done:
			case <-time.After(10 * time.Second):
				t.Logf("realclient: %s (pid %d) still not reaped after SIGKILL", d.name, d.cmd.Process.Pid)
			}
		}
	}
	d.logFile.Close()
}

// killPIDFile SIGKILLs a process named by a pid file if it is still alive
// and its command line contains marker (so a recycled pid is left alone):
// for children a daemon failed to stop, e.g. dockerd's managed containerd.
func killPIDFile(path, marker string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var pid int
	if _, err := fmt.Sscan(string(data), &pid); err != nil || pid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), marker) {
		return
	}
	if syscall.Kill(pid, 0) == nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 50 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
}
