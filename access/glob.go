package access

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ErrBadPattern is returned for a glob that cannot be compiled.
var ErrBadPattern = errors.New("invalid pattern")

// Glob is a compiled pattern over slash-separated names such as
// "docker.io/library/alpine":
//
//   - any run of characters within one path component (no '/')
//     **    any run of characters across components; as a whole component
//     ("a/**/b", "a/**") it also matches no component at all
//     other characters match themselves
//
// So "docker.io/**" matches every Docker Hub repository,
// "ghcr.io/myorg/*" the repositories directly under myorg, and
// "**/alpine" an alpine repository anywhere. The zero Glob matches nothing.
type Glob struct {
	pattern string
	re      *regexp.Regexp
}

// globChars are the characters a pattern may hold besides the wildcards:
// those of registry hosts (with ports), repository names and tags.
func globChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '-' || c == ':' || c == '/' || c == '@' || c == '+'
}

// CompileGlob checks and compiles pattern.
func CompileGlob(pattern string) (Glob, error) {
	if pattern == "" {
		return Glob{}, fmt.Errorf("%w: empty", ErrBadPattern)
	}
	if strings.Contains(pattern, "***") {
		return Glob{}, fmt.Errorf("%w: %q: at most two '*' in a row", ErrBadPattern, pattern)
	}
	if strings.Contains(pattern, "//") || strings.HasPrefix(pattern, "/") {
		return Glob{}, fmt.Errorf("%w: %q: empty path component", ErrBadPattern, pattern)
	}
	var b strings.Builder
	b.WriteString(`(?s)^`)
	for i := 0; i < len(pattern); {
		c := pattern[i]
		switch {
		case strings.HasPrefix(pattern[i:], "**"):
			wholeStart := i == 0 || pattern[i-1] == '/'
			end := i+2 == len(pattern)
			wholeEnd := end || pattern[i+2] == '/'
			if wholeStart && wholeEnd && !end {
				// "**/": zero or more whole components.
				b.WriteString(`(?:.*/)?`)
				i += 3
				continue
			}
			b.WriteString(`.*`)
			i += 2
		case pattern[i:] == "/**":
			// A trailing "/**": the prefix itself or anything below it.
			b.WriteString(`(?:/.*)?`)
			i += 3
		case c == '*':
			b.WriteString(`[^/]*`)
			i++
		case globChar(c):
			b.WriteString(regexp.QuoteMeta(string(c)))
			i++
		default:
			return Glob{}, fmt.Errorf("%w: %q: character %q is not allowed", ErrBadPattern, pattern, c)
		}
	}
	b.WriteString(`$`)
	re, err := regexp.Compile(b.String())
	if err != nil {
		return Glob{}, fmt.Errorf("%w: %q: %v", ErrBadPattern, pattern, err)
	}
	return Glob{pattern: pattern, re: re}, nil
}

// MustCompileGlob is CompileGlob that panics, for patterns in code.
func MustCompileGlob(pattern string) Glob {
	g, err := CompileGlob(pattern)
	if err != nil {
		panic(err)
	}
	return g
}

// Match reports whether name matches the pattern.
func (g Glob) Match(name string) bool { return g.re != nil && g.re.MatchString(name) }

// String returns the pattern as written.
func (g Glob) String() string { return g.pattern }

// MatchPattern compiles pattern and matches name against it.
func MatchPattern(pattern, name string) (bool, error) {
	g, err := CompileGlob(pattern)
	if err != nil {
		return false, err
	}
	return g.Match(name), nil
}
