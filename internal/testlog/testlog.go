// Package testlog gives tests a log sink they can read back.
package testlog

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
)

// Buffer is an io.Writer safe for concurrent writers whose content can be
// read while they write.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Logger logs text at level and above to w.
func Logger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// To is a writer whose every write becomes one t.Log line, so that a log
// shows beside the test that made it (and only when it fails or -v).
func To(t testing.TB) io.Writer { return tWriter{t} }

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// ForTest logs text to t (To) at level ("debug", "info", "warn", "error";
// anything else is info), or at debug whatever level says when the
// environment sets REGMIRROR_TEST_VERBOSE.
func ForTest(t testing.TB, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	if os.Getenv("REGMIRROR_TEST_VERBOSE") != "" {
		l = slog.LevelDebug
	}
	return Logger(To(t), l)
}
