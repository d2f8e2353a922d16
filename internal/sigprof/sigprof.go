// Package sigprof writes a CPU profile of a window that another process
// marks with signals: SIGUSR1 starts it, SIGUSR2 stops it, writes the
// profile to the path given and creates path+".done". The benchmarks in
// bench/ use it to profile a server during the measured load only, not
// its start-up or warm-up; normal builds of regmirror do not include it
// (see cpuprofile.go, built only with -tags cpuprofile).
package sigprof

import (
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"syscall"
)

// Start installs the signal handlers if path is not empty.
// REGMIRROR_CPUPROFILE_HZ sets a sampling rate other than the runtime's
// 100 Hz, for short windows (a tag storm lasts tens of milliseconds).
func Start(path string) {
	if path == "" {
		return
	}
	hz, _ := strconv.Atoi(os.Getenv("REGMIRROR_CPUPROFILE_HZ"))
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		var f *os.File
		for s := range sig {
			switch {
			case s == syscall.SIGUSR1 && f == nil:
				var err error
				if hz > 0 {
					runtime.SetCPUProfileRate(hz) // StartCPUProfile then warns that the rate is set; it keeps it
				}
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
