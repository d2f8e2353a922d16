package main

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

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

// TestStopWhileStarting: a SIGTERM or Ctrl-C that arrives while the mirror
// starts (serve's context is the signal's; a crash's reconcile can take
// minutes) reaches Run already done. Run must still return, and at once:
// before, Shutdown could run before Serve held the listener, and Serve
// then served on until the process was killed.
func TestStopWhileStarting(t *testing.T) {
	for range 5 {
		cfg := defaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.DataDir = t.TempDir()
		cfg.LogLevel = "warn"
		if err := cfg.finish(); err != nil {
			t.Fatal(err)
		}
		a, err := newApp(cfg, testlog.ForTest(t, "warn"))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(10 * time.Second): // shutdown_timeout is 30 s: only a hang gets here
			a.ln.Close()
			<-done
			t.Fatal("Run did not return when stopped as it started")
		}
	}
}
