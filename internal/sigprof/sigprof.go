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
