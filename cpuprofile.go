//go:build cpuprofile

package main

import (
	"os"

	"github.com/regmirror/regmirror/internal/sigprof"
)

// A binary built with -tags cpuprofile and run with REGMIRROR_CPUPROFILE=path
// writes a CPU profile of the window between SIGUSR1 (start) and SIGUSR2
// (stop) to path, then creates path.done. bench/smallreq.sh uses it to
// profile the measured load only; normal builds have none of this.
func init() { sigprof.Start(os.Getenv("REGMIRROR_CPUPROFILE")) }
