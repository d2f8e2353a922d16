package access

import (
	"strings"
	"testing"
)

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern string
		name    string
		want    bool
	}{
		{"docker.io/**", "docker.io/library/alpine", true},
		{"docker.io/**", "docker.io/a/b/c/d", true},
		{"docker.io/**", "ghcr.io/library/alpine", false},
		{"docker.io/**", "docker.iox/library/alpine", false},
		{"docker.io/*", "docker.io/library/alpine", false},
		{"docker.io/library/*", "docker.io/library/alpine", true},
		{"docker.io/library/*", "docker.io/library/alpine/extra", false},
		{"docker.io/*/alpine", "docker.io/library/alpine", true},
		{"docker.io/*/alpine", "docker.io/a/b/alpine", false},
		{"docker.io/**/alpine", "docker.io/alpine", true},
		{"docker.io/**/alpine", "docker.io/a/b/alpine", true},
		{"docker.io/**/alpine", "docker.io/a/b/alpinex", false},
		{"**/alpine", "ghcr.io/x/alpine", true},
		{"**/alpine", "alpine", true},
		{"**", "anything/at/all", true},
		{"ghcr.io/myorg/**", "ghcr.io/myorg/app", true},
		{"ghcr.io/myorg/**", "ghcr.io/myorgx/app", false},
		{"ghcr.io/myorg/**", "ghcr.io/other/myorg/app", false},
		{"docker.io/someuser/**", "docker.io/someuser/x", true},
		{"docker.io/some*/**", "docker.io/someuser/x", true},
		{"docker.io/some*", "docker.io/someuser/x", false},
		{"docker.io/lib**", "docker.io/library/alpine", true},
		{"registry.corp:5000/**", "registry.corp:5000/team/app", true},
		{"registry.corp:5000/**", "registry.corp:5001/team/app", false},
		{"docker.io/library/alpine", "docker.io/library/alpine", true},
		{"docker.io/library/alpine", "docker.io/library/alpin", false},
		{"docker.io/library/a.pine", "docker.io/library/alpine", false}, // '.' is literal
		{"docker.io/library/alpine:*", "docker.io/library/alpine:3.20", true},
	}
	for _, tt := range tests {
		got, err := MatchPattern(tt.pattern, tt.name)
		if err != nil {
			t.Errorf("MatchPattern(%q): %v", tt.pattern, err)
			continue
		}
		if got != tt.want {
			t.Errorf("MatchPattern(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestGlobInvalid(t *testing.T) {
	for _, p := range []string{"", "docker.io/[abc]", "a/***", "/docker.io", "docker.io//x", "docker.io/a b", "docker.io/?", `x\y`} {
		if _, err := CompileGlob(p); err == nil {
			t.Errorf("CompileGlob(%q) accepted", p)
		}
	}
	var zero Glob
	if zero.Match("") || zero.Match("x") {
		t.Error("the zero Glob matched")
	}
}

// refMatch is a plain backtracking reading of the glob language, to check
// the compiled matcher against. atStart says p begins a path component.
func refMatch(p, s string, atStart bool) bool {
	if p == "" {
		return s == ""
	}
	if strings.HasPrefix(p, "**") {
		rest := p[2:]
		// A whole-component "**/" may match no component at all.
		if atStart && strings.HasPrefix(rest, "/") && refMatch(rest[1:], s, true) {
			return true
		}
		for i := 0; i <= len(s); i++ {
			if refMatch(rest, s[i:], false) {
				return true
			}
		}
		return false
	}
	if p[0] == '*' {
		for i := 0; i <= len(s); i++ {
			if refMatch(p[1:], s[i:], false) {
				return true
			}
			if i < len(s) && s[i] == '/' {
				break
			}
		}
		return false
	}
	// A trailing "/**" also matches the bare prefix.
	if p == "/**" && s == "" {
		return true
	}
	return s != "" && p[0] == s[0] && refMatch(p[1:], s[1:], p[0] == '/')
}

func FuzzGlob(f *testing.F) {
	for _, seed := range [][2]string{
		{"docker.io/**", "docker.io/library/alpine"},
		{"**/alpine", "alpine"},
		{"a/**/b", "a/b"},
		{"a/*/b*", "a/x/by"},
		{"docker.io/lib**", "docker.io/library/a"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if len(pattern) > 40 || len(name) > 60 {
			return
		}
		g, err := CompileGlob(pattern)
		if err != nil {
			return
		}
		got := g.Match(name)
		if want := refMatch(pattern, name, true); got != want {
			t.Fatalf("Glob(%q).Match(%q) = %v, reference says %v", pattern, name, got, want)
		}
		if !strings.Contains(pattern, "*") && got != (pattern == name) {
			t.Fatalf("literal pattern %q vs %q: %v", pattern, name, got)
		}
	})
}
