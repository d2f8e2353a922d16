//go:build !linux

package realclient

import (
	"errors"
	"os/exec"
)

func daemonAttrs(cmd *exec.Cmd) {}

func unmount(path string) error { return errors.New("unmount: not supported on this OS") }
