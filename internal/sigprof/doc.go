// Package sigprof writes a CPU profile of a window that another process
// marks with signals: SIGUSR1 starts it, SIGUSR2 stops it, writes the
// profile to the path given and creates path+".done". The benchmarks in
// bench/ use it to profile a server during the measured load only, not
// its start-up or warm-up; normal builds of regmirror do not include it
// (see cpuprofile.go, built only with -tags cpuprofile).
package sigprof
