package logline

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regmirror/regmirror/internal/testlog"
)

// attr is one attribute of a test line, in both forms.
type attr struct {
	kind byte // 's', 'i', 'f'
	key  string
	s    string
	i    int64
	f    float64
}

// bothWays formats one line through slog's handler and through the fast
// path, over the same output.
func bothWays(t testing.TB, format Format, at time.Time, level slog.Level, msg string, attrs []attr) (viaSlog, fast string) {
	var out bytes.Buffer
	return bothWaysOn(t, New(&out, format, slog.LevelDebug), &out, at, level, msg, attrs)
}

// bothWaysOn is bothWays on a logger kept between lines, which New made
// over out.
func bothWaysOn(t testing.TB, log *slog.Logger, out *bytes.Buffer, at time.Time, level slog.Level, msg string, attrs []attr) (viaSlog, fast string) {
	out.Reset()
	r := slog.NewRecord(at, level, msg, 0)
	for _, a := range attrs {
		switch a.kind {
		case 's':
			r.AddAttrs(slog.String(a.key, a.s))
		case 'i':
			r.AddAttrs(slog.Int64(a.key, a.i))
		case 'f':
			r.AddAttrs(slog.Float64(a.key, a.f))
		}
	}
	if err := log.Handler().Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	viaSlog = out.String()
	out.Reset()
	l := LinesOf(log).Begin(at, level, msg)
	for _, a := range attrs {
		switch a.kind {
		case 's':
			l.String(a.key, a.s)
		case 'i':
			l.Int(a.key, a.i)
		case 'f':
			l.Float(a.key, a.f)
		}
	}
	l.End()
	return viaSlog, out.String()
}

var pieces = []string{"", " ", "=", `"`, `\`, "\n", "\r", "\t", "\x00", "\x1f", "\x7f", "\x80", "\xff", "é", "\u00a0", "\u2028", "\u2029", "\u200b", "\ufeff", "😀", "\U0010ffff", "a", "Z", "/", ":", "@", "docker/24.0.7 go/go1.21 (linux)", "sha256:abc", "<&>", "'", "{", "}"}

func randomString(rng *rand.Rand) string {
	var sb strings.Builder
	for range rng.IntN(6) {
		if rng.IntN(3) == 0 {
			sb.WriteByte(byte(rng.IntN(256)))
		} else {
			sb.WriteString(pieces[rng.IntN(len(pieces))])
		}
	}
	return sb.String()
}

func randomFloat(rng *rand.Rand) float64 {
	switch rng.IntN(6) {
	case 0:
		return 0
	case 1:
		return rng.Float64() * 1e-5 // around json's 1e-6 switch
	case 2:
		return math.Pow(10, float64(rng.IntN(50)-25)) * rng.Float64()
	case 3:
		return -rng.Float64() * 1e22
	case 4:
		return float64(rng.IntN(1000))
	}
	return rng.Float64()
}

func randomTime(rng *rand.Rand) time.Time {
	zones := []*time.Location{time.UTC, time.FixedZone("x", 5*3600+1800), time.FixedZone("y", -7*3600), time.Local}
	return time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).In(zones[rng.IntN(len(zones))])
}

// TestMatchesSlog: the fast path writes what slog's handler writes, for
// random strings (every byte, quoting and escaping cases, invalid UTF-8),
// integers, floats (both sides of JSON's exponent switch), times and
// levels, in both formats.
func TestMatchesSlog(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	levels := []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError, slog.LevelInfo + 2}
	for n := range 20000 {
		format := Format(n % 2)
		var attrs []attr
		for range rng.IntN(8) {
			a := attr{kind: "sif"[rng.IntN(3)], key: randomString(rng)}
			if rng.IntN(2) == 0 {
				a.key = "duration_s"
			}
			a.s, a.i, a.f = randomString(rng), rng.Int64()-rng.Int64(), randomFloat(rng)
			attrs = append(attrs, a)
		}
		at := randomTime(rng)
		want, got := bothWays(t, format, at, levels[rng.IntN(len(levels))], randomString(rng), attrs)
		if got != want {
			t.Fatalf("format %d, line %d:\nslog: %q\nfast: %q", format, n, want, got)
		}
	}
}

func FuzzMatchesSlog(f *testing.F) {
	f.Add("GET", "/v2/library/alpine/manifests/latest", int64(200), 0.000412, "docker/24.0 (linux)", int64(1700000000123456789), true)
	f.Add("", "\xff\u2028\"=\\", int64(-1), 1e-7, " ", int64(0), false)
	f.Fuzz(func(t *testing.T, method, path string, status int64, duration float64, ua string, unixNano int64, json bool) {
		if math.IsNaN(duration) || math.IsInf(duration, 0) {
			return // not JSON; no caller logs them
		}
		at := time.Unix(0, unixNano).UTC()
		if y := at.Year(); y < 0 || y >= 10000 {
			return // slog writes an error for these years
		}
		format := Text
		if json {
			format = JSON
		}
		attrs := []attr{{kind: 's', key: "method", s: method}, {kind: 's', key: "path", s: path}, {kind: 'i', key: "status", i: status}, {kind: 'f', key: "duration_s", f: duration}, {kind: 's', key: "user_agent", s: ua}}
		want, got := bothWays(t, format, at, slog.LevelInfo, "request", attrs)
		if got != want {
			t.Fatalf("slog: %q\nfast: %q", want, got)
		}
	})
}

// TestDerivedLoggerHasNoFastPath: a logger with attributes of its own
// must not hand out the Writer, which would drop them.
func TestDerivedLoggerHasNoFastPath(t *testing.T) {
	log := New(&bytes.Buffer{}, Text, slog.LevelInfo)
	if LinesOf(log) == nil {
		t.Fatal("root logger: no fast path")
	}
	if LinesOf(log.With("registry", "docker.io")) != nil || LinesOf(log.WithGroup("g")) != nil {
		t.Fatal("derived logger hands out the fast path")
	}
	if LinesOf(slog.Default()) != nil {
		t.Fatal("foreign logger hands out a fast path")
	}
}

// TestLinesDoNotInterleave: lines from both paths, written concurrently,
// arrive whole.
func TestLinesDoNotInterleave(t *testing.T) {
	var out bytes.Buffer
	writeFromBothPaths(New(&out, Text, slog.LevelInfo), 8, 200, strings.Repeat("a", 300), strings.Repeat("b", 300))
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != 1600 {
		t.Fatalf("%d lines, want 1600", len(got))
	}
	for _, line := range got {
		if !strings.HasSuffix(line, "k="+strings.Repeat("a", 300)) && !strings.HasSuffix(line, "k="+strings.Repeat("b", 300)) {
			t.Fatalf("torn line %q", line)
		}
	}
}

func BenchmarkRequestLine(b *testing.B) {
	at := time.Now()
	for _, format := range []Format{Text, JSON} {
		log := New(discard{}, format, slog.LevelInfo)
		lines := LinesOf(log)
		name := map[Format]string{Text: "text", JSON: "json"}[format]
		b.Run(name+"/fast", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				l := lines.Begin(at, slog.LevelInfo, "request")
				l.String("method", "GET")
				l.String("path", "/v2/library/small/manifests/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
				l.Int("status", 200)
				l.Int("bytes", 428)
				l.Float("duration_s", 0.000041237)
				l.String("client", "127.0.0.1")
				l.String("user_agent", "docker/24.0.7 go/go1.21.4 git-commit/311b9ff kernel/6.1.0 os/linux arch/amd64")
				l.String("registry", "docker.io")
				l.String("cache", "hit")
				l.End()
			}
		})
		b.Run(name+"/slog", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := slog.NewRecord(at, slog.LevelInfo, "request", 0)
				r.AddAttrs(slog.String("method", "GET"),
					slog.String("path", "/v2/library/small/manifests/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
					slog.Int("status", 200), slog.Int64("bytes", 428), slog.Float64("duration_s", 0.000041237),
					slog.String("client", "127.0.0.1"),
					slog.String("user_agent", "docker/24.0.7 go/go1.21.4 git-commit/311b9ff kernel/6.1.0 os/linux arch/amd64"),
					slog.String("registry", "docker.io"), slog.String("cache", "hit"))
				log.Handler().Handle(context.Background(), r)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestTimeWithinASecond: the cached second is split and refilled right:
// many times within one second (every fraction width, a zero fraction),
// seconds and zones alternating, and years at the ends of the range.
func TestTimeWithinASecond(t *testing.T) {
	zones := []*time.Location{time.UTC, time.FixedZone("a", 5*3600+1800), time.FixedZone("b", -7*3600), time.FixedZone("z", 0), time.Local}
	base := time.Date(2026, 11, 30, 13, 9, 29, 0, time.UTC)
	var times []time.Time
	for _, ns := range []int{0, 1, 10, 999, 1000, 100000, 999999, 1000000, 123456789, 500000000, 999999999} {
		for _, z := range zones {
			times = append(times, base.Add(time.Duration(ns)).In(z), base.Add(time.Second+time.Duration(ns)).In(z))
		}
	}
	times = append(times,
		time.Date(1, 1, 1, 0, 0, 0, 5, time.UTC), time.Date(1, 1, 4, 0, 0, 0, 5, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999, time.UTC), time.Date(9999, 12, 29, 0, 0, 0, 1, time.FixedZone("e", 14*3600)),
		time.Date(1969, 12, 31, 23, 59, 59, 500, time.UTC), time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC))
	for _, format := range []Format{Text, JSON} {
		var out bytes.Buffer
		log := New(&out, format, slog.LevelDebug) // one Writer: its cached second is reused
		for _, at := range times {
			want, got := bothWaysOn(t, log, &out, at, slog.LevelInfo, "m", nil)
			if got != want {
				t.Fatalf("format %d, %v:\nslog: %q\nfast: %q", format, at, want, got)
			}
		}
	}
}

// wholeBuffer is a writer like internal/logbuf's: safe for concurrent
// writes, each whole.
type wholeBuffer struct{ testlog.Buffer }

func (w *wholeBuffer) WritesWhole() bool { return true }

// TestWholeWriterTakesNoLock: over a writer that keeps concurrent writes
// whole, lines are written to it directly, and still arrive whole.
func TestWholeWriterTakesNoLock(t *testing.T) {
	var out wholeBuffer
	log := New(&out, Text, slog.LevelInfo)
	if _, locked := LinesOf(log).out.(*lockedWriter); locked {
		t.Fatal("a writer that keeps writes whole got a lock of its own")
	}
	writeFromBothPaths(log, 4, 100, "slow", "fast")
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != 400 {
		t.Fatalf("%d lines, want 400", len(got))
	}
	for _, line := range got {
		if !strings.HasSuffix(line, "msg=slow k=slow") && !strings.HasSuffix(line, "msg=fast k=fast") {
			t.Fatalf("torn line %q", line)
		}
	}
}

// writeFromBothPaths has goroutines write n lines each at once, half
// through log's slog handler (attribute k=slow) and half through its fast
// path (k=fast).
func writeFromBothPaths(log *slog.Logger, goroutines, n int, slow, fast string) {
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				if g%2 == 0 {
					log.Info("slow", "k", slow)
				} else {
					l := LinesOf(log).Begin(time.Now(), slog.LevelInfo, "fast")
					l.String("k", fast)
					l.End()
				}
			}
		}()
	}
	wg.Wait()
}

// bare8 says "all bare" exactly when the table does for each of the eight
// bytes: every byte value at every position among bare ones, then random
// words, mostly of bytes near the classes' edges.
func TestBare8MatchesTable(t *testing.T) {
	tableBare := func(s string) bool {
		for i := range len(s) {
			if textClass[s[i]] != textBare {
				return false
			}
		}
		return true
	}
	for pos := range 8 {
		for c := range 256 {
			w := []byte("abcdefgh")
			w[pos] = byte(c)
			if got, want := bare8(string(w)), tableBare(string(w)); got != want {
				t.Fatalf("bare8(%q) = %v, the table says %v", w, got, want)
			}
		}
	}
	edges := []byte{0, 0x1f, ' ', '!', '"', '#', '<', '=', '>', '\\', '~', 0x7f, 0x80, 0xfe, 0xff}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200_000 {
		var w [8]byte
		for i := range w {
			if rng.IntN(2) == 0 {
				w[i] = edges[rng.IntN(len(edges))]
			} else {
				w[i] = byte(rng.IntN(256))
			}
		}
		if got, want := bare8(string(w[:])), tableBare(string(w[:])); got != want {
			t.Fatalf("bare8(%q) = %v, the table says %v", w, got, want)
		}
	}
}
