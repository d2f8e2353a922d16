package logline

import (
	"io"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"
)

// Format is the log's encoding, as slog's two handlers write it.
type Format int

const (
	Text Format = iota // key=value, slog.TextHandler
	JSON               // one object per line, slog.JSONHandler
)

// New returns a logger that writes format to w at level and above. Its
// handler carries a Writer for LinesOf.
func New(w io.Writer, format Format, level slog.Leveler) *slog.Logger {
	var lw io.Writer = w
	if ww, ok := w.(wholeWriter); !ok || !ww.WritesWhole() {
		lw = &lockedWriter{w: w}
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if format == JSON {
		h = slog.NewJSONHandler(lw, opts)
	} else {
		h = slog.NewTextHandler(lw, opts)
	}
	return slog.New(&handler{Handler: h, lines: &Writer{out: lw, json: format == JSON}})
}

// LinesOf is the fast-path Writer of a logger New returned, or nil for
// any other logger (one derived with With or WithGroup included).
func LinesOf(l *slog.Logger) *Writer {
	if h, ok := l.Handler().(*handler); ok {
		return h.lines
	}
	return nil
}

// handler is slog's handler plus the Writer that shares its output.
// WithAttrs and WithGroup come from the embedded handler and so return
// plain slog handlers: a derived logger has no fast path.
type handler struct {
	slog.Handler
	lines *Writer
}

// wholeWriter is a writer that is safe for concurrent Writes and keeps
// each whole (internal/logbuf): no lock is needed around it.
type wholeWriter interface {
	WritesWhole() bool
}

// lockedWriter serialises the slog handler's writes and the fast path's
// over any other writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Writer formats lines of fixed shape as the logger's slog handler would.
type Writer struct {
	out    io.Writer
	json   bool
	pool   sync.Pool             // *Line
	second atomic.Pointer[stamp] // the last second formatted
}

// stamp is one second's formatted time, split around its fraction:
// formatting a time is a third of a line's cost, and a busy server writes
// thousands of lines in the same second.
type stamp struct {
	unix   int64
	loc    *time.Location
	prefix []byte // "2006-01-02T15:04:05"
	zone   []byte // "Z" or "-07:00"
}

// Line is one line being built; Begin hands it out and End writes it.
// It must not be used after End.
type Line struct {
	w   *Writer
	buf []byte
}

// Begin starts a line with slog's built-in attributes: time (never zero
// here), level and message.
func (w *Writer) Begin(t time.Time, level slog.Level, msg string) *Line {
	l, _ := w.pool.Get().(*Line)
	if l == nil {
		l = &Line{w: w, buf: make([]byte, 0, 512)}
	}
	b := l.buf[:0]
	if w.json {
		b = append(b, `{"time":"`...)
		b = w.appendTime(b, t, false)
		b = append(b, `","level":`...)
		b = appendJSONString(b, level.String())
		b = append(b, `,"msg":`...)
		b = appendJSONString(b, msg)
	} else {
		b = append(b, "time="...)
		b = w.appendTime(b, t, true)
		b = append(b, " level="...)
		b = appendTextString(b, level.String())
		b = append(b, " msg="...)
		b = appendTextString(b, msg)
	}
	l.buf = b
	return l
}

func (l *Line) key(k string) {
	if l.w.json {
		l.buf = append(l.buf, ',')
		l.buf = appendJSONString(l.buf, k)
		l.buf = append(l.buf, ':')
		return
	}
	l.buf = append(l.buf, ' ')
	l.buf = appendTextString(l.buf, k)
	l.buf = append(l.buf, '=')
}

// String adds a string attribute.
func (l *Line) String(k, v string) {
	l.key(k)
	if l.w.json {
		l.buf = appendJSONString(l.buf, v)
	} else {
		l.buf = appendTextString(l.buf, v)
	}
}

// Int adds an integer attribute.
func (l *Line) Int(k string, v int64) {
	l.key(k)
	l.buf = strconv.AppendInt(l.buf, v, 10)
}

// Float adds a float attribute.
func (l *Line) Float(k string, v float64) {
	l.key(k)
	if l.w.json {
		l.buf = appendJSONFloat(l.buf, v)
	} else {
		l.buf = strconv.AppendFloat(l.buf, v, 'g', -1, 64)
	}
}

// End writes the line in one Write and recycles it.
func (l *Line) End() {
	if l.w.json {
		l.buf = append(l.buf, '}')
	}
	l.buf = append(l.buf, '\n')
	l.w.out.Write(l.buf) // as slog: a failing log output is not the caller's error
	if cap(l.buf) <= 16<<10 {
		l.w.pool.Put(l)
	}
}

// appendTime appends t as slog does: RFC 3339 with exactly three
// fractional digits, truncated (text), or RFC3339Nano (JSON: up to nine,
// trailing zeros and a zero fraction dropped).
func (w *Writer) appendTime(b []byte, t time.Time, millis bool) []byte {
	if u := t.Unix(); u < minStampUnix || u > maxStampUnix { // near or past RFC 3339's years
		if millis {
			return appendRFC3339Millis(b, t)
		}
		return t.AppendFormat(b, time.RFC3339Nano)
	}
	st := w.second.Load()
	if st == nil || st.unix != t.Unix() || st.loc != t.Location() {
		st = newStamp(t)
		w.second.Store(st)
	}
	b = append(b, st.prefix...)
	ns := t.Nanosecond()
	if millis {
		ms := ns / 1e6
		b = append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	} else if ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, st.zone...)
}

// Four-digit years in any zone (two days' margin for the zone's offset),
// where the split holds.
const (
	minStampUnix = -62135596800 + 2*86400 // 0001-01-03T00:00:00Z
	maxStampUnix = 253402300800 - 2*86400 // 9999-12-30T00:00:00Z
)

func newStamp(t time.Time) *stamp {
	full := t.Truncate(time.Second).AppendFormat(nil, time.RFC3339) // a whole second: no fraction
	const prefixLen = len("2006-01-02T15:04:05")
	return &stamp{unix: t.Unix(), loc: t.Location(), prefix: full[:prefixLen], zone: full[prefixLen:]}
}

// appendRFC3339Millis is slog's text time: RFC 3339 with exactly three
// fractional digits, truncated.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	// RFC3339Nano trims trailing zeros: a tenth of a millisecond keeps
	// four digits, and the fourth is dropped.
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...)
}

// appendTextString writes s bare, or quoted (strconv.Quote) where the
// text handler quotes: empty, a space, '=', '"', a control character, or
// a rune that is not printable or is a space or invalid UTF-8. Printable
// ASCII, which is nearly every value logged, takes a table instead.
func appendTextString(b []byte, s string) []byte {
	worst := byte(textBare)
	if s == "" {
		worst = textQuote
	}
	i := 0
	for ; i+8 <= len(s) && bare8(s[i:i+8]); i += 8 {
	}
	for ; i < len(s) && worst != textSlow; i++ {
		worst = max(worst, textClass[s[i]])
	}
	switch worst {
	case textBare:
		return append(b, s...)
	case textQuote: // strconv.Quote escapes only '"' and '\\' in printable ASCII
		b = append(b, '"')
		start := 0
		for i := 0; i < len(s); i++ {
			if c := s[i]; c == '"' || c == '\\' {
				b = append(b, s[start:i]...)
				b = append(b, '\\', c)
				start = i + 1
			}
		}
		b = append(b, s[start:]...)
		return append(b, '"')
	}
	if needsQuoting(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

// Classes of a byte for appendTextString, in rising order of work.
const (
	textBare  = iota // printable ASCII the text handler leaves bare ('\\' too)
	textQuote        // space, '=', '"': quoted, and printable
	textSlow         // control characters and non-ASCII: the general path
)

// bare8 reports whether the 8 bytes of s are all textBare, a word at a
// time (bit twiddling hacks' haszero, hasless and hasmore): a request line
// is ~200 bytes of such text, and the table takes a byte at a time.
func bare8(s string) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	_ = s[7] // one bounds check, then one load
	x := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
	below := (x - ones*0x21) &^ x     // a byte under '!': space or a control
	above := (x + ones*(127-'~')) | x // a byte over '~': DEL or non-ASCII
	eq, quote := x^(ones*'='), x^(ones*'"')
	return (below|above|(eq-ones)&^eq|(quote-ones)&^quote)&highs == 0
}

var textClass = func() (t [256]byte) {
	for c := range 256 {
		switch {
		case c < 0x20 || c >= 0x7f:
			t[c] = textSlow
		case c == ' ' || c == '=' || c == '"':
			t[c] = textQuote
		}
	}
	return t
}()

func needsQuoting(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c != '\\' && (c == ' ' || c == '=' || !jsonSafe(c)) {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// jsonSafe reports whether an ASCII byte stands for itself in a JSON
// string: everything but control characters, '"' and '\\'.
func jsonSafe(c byte) bool { return c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf }

const hexDigits = "0123456789abcdef"

// appendJSONString writes s quoted and escaped as slog's JSON handler
// does (encoding/json's rules without HTML escaping).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if jsonSafe(c) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' { // valid JSON, but not JavaScript
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendJSONFloat writes f as encoding/json does (which slog's JSON
// handler calls): plain decimal, exponent form only for very small or
// very large magnitudes, with a two-digit negative exponent shortened.
// NaN and infinities are not JSON; slog writes an error there, and no
// caller of this package logs them.
func appendJSONFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.AppendQuote(b, "!ERROR:unsupported value")
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
