//go:build linux

package realclient

import (
	"os/exec"
	"syscall"
)

// daemonAttrs makes a daemon die with the test binary (SIGTERM when the
// parent goes away) and puts it in its own process group.
func daemonAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

func unmount(path string) error { return syscall.Unmount(path, syscall.MNT_DETACH) }
