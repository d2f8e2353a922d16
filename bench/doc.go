// Package bench holds regmirror's performance benchmarks. They run the real
// command as a process against the test upstream on loopback, next to the
// baselines the issues name. Run them with bench/run.sh, which prints a
// table; `go test ./...` compiles them but runs none.
package bench
