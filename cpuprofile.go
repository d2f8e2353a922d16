//go:build cpuprofile

package main

import (
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

// A binary built with -tags cpuprofile and run with REGMIRROR_CPUPROFILE=path
// writes a CPU profile of the window between SIGUSR1 (start) and SIGUSR2
// (stop) to path, then creates path.done. bench/smallreq.sh uses it to
// profile the measured load only; normal builds have none of this.
func init() {
	path := os.Getenv("REGMIRROR_CPUPROFILE")
	if path == "" {
		return
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		var f *os.File
		for s := range sig {
			switch {
			case s == syscall.SIGUSR1 && f == nil:
				var err error
				if f, err = os.Create(path); err == nil {
					if pprof.StartCPUProfile(f) != nil {
						f.Close()
						f = nil
					}
				}
			case s == syscall.SIGUSR2 && f != nil:
				pprof.StopCPUProfile()
				f.Close()
				f = nil
				if done, err := os.Create(path + ".done"); err == nil {
					done.Close()
				}
			}
		}
	}()
}
