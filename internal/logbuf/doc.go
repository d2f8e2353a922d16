// Package logbuf is the buffered writer under regmirror serve's log: log
// lines are gathered in memory and written to the real output in batches,
// by a goroutine of their own, so that no request waits on a write to
// stderr or a log pipe. A line after a quiet interval (200 ms) goes out at
// once; under load, lines go out in batches, five a second (or every 64
// KiB). Close writes whatever is left, so a clean shutdown loses no line;
// a crash loses at most the last interval's.
package logbuf
