package main

import (
	"errors"
	"net"
	"testing"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/internal/testlog"
)

// TestFailedStartReleasesPort: the port is taken before the data dir is
// opened (so that probes get /readyz 503 while the index opens); a start
// that then fails gives it back.
func TestFailedStartReleasesPort(t *testing.T) {
	m := startMirror(t, nil)
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()

	cfg := m.cfg
	cfg.Listen = addr
	if _, err := newApp(cfg, testlog.ForTest(t, "warn")); !errors.Is(err, cache.ErrBusy) {
		t.Fatalf("second server on a busy data dir: %v, want cache.ErrBusy", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the failed start kept %s: %v", addr, err)
	}
	ln.Close()
}
