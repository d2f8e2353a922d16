package testlog

import (
	"log/slog"
	"strings"
	"testing"
)

// recorder is a testing.TB that keeps what is logged to it.
type recorder struct {
	testing.TB
	lines []string
}

func (r *recorder) Log(args ...any) {
	for _, a := range args {
		r.lines = append(r.lines, a.(string))
	}
}

func TestForTest(t *testing.T) {
	t.Setenv("REGMIRROR_TEST_VERBOSE", "")
	rec := &recorder{TB: t}
	log := ForTest(rec, "warn")
	log.Info("hidden")
	log.Warn("shown", "k", "v")
	if len(rec.lines) != 1 || !strings.Contains(rec.lines[0], "msg=shown k=v") || strings.HasSuffix(rec.lines[0], "\n") {
		t.Fatalf("lines %q, want the one warning without its newline", rec.lines)
	}
	t.Setenv("REGMIRROR_TEST_VERBOSE", "1")
	ForTest(rec, "warn").Debug("verbose")
	if len(rec.lines) != 2 {
		t.Fatalf("REGMIRROR_TEST_VERBOSE: lines %q, want the debug line too", rec.lines)
	}
}

func TestBuffer(t *testing.T) {
	var b Buffer
	Logger(&b, slog.LevelInfo).Info("x")
	if !strings.Contains(b.String(), "msg=x") {
		t.Fatalf("buffer %q", b.String())
	}
}
