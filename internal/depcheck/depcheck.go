// Package depcheck asserts a package's import rule from its own tests: each
// package of regmirror may import the standard library and a short, named
// list of others (Allow), so that every third-party library stays in one
// package and the project's packages keep their one job; package main,
// the composition root, names what it must not import instead (Deny).
package depcheck

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Deny fails t if a non-test Go file in the current directory imports a
// path in denied (an entry ending in "/..." denies that path and everything
// below): for a package whose rule is what it must leave to others, like
// package main, which imports nearly everything.
func Deny(t *testing.T, denied ...string) {
	t.Helper()
	each(t, func(name, path string) {
		if allows(denied, path) {
			t.Errorf("%s imports %q, which the package's rule leaves to another package", name, path)
		}
	})
}

// Allow fails t if a non-test Go file in the current directory (the package
// under test) imports anything outside the standard library that is not in
// allowed. An entry ending in "/..." allows that path and everything below.
func Allow(t *testing.T, allowed ...string) {
	t.Helper()
	each(t, func(name, path string) {
		if first, _, _ := strings.Cut(path, "/"); !strings.Contains(first, ".") {
			return // the standard library
		}
		if !allows(allowed, path) {
			t.Errorf("%s imports %q, outside the package's rule %v", name, path, allowed)
		}
	})
}

// each calls fn with every import of every non-test Go file in the current
// directory.
func each(t *testing.T, fn func(file, path string)) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			fn(name, path)
		}
	}
	if checked == 0 {
		t.Fatal("depcheck: no source files in the package")
	}
}

func allows(allowed []string, path string) bool {
	for _, a := range allowed {
		if prefix, ok := strings.CutSuffix(a, "/..."); ok {
			if path == prefix || strings.HasPrefix(path, prefix+"/") {
				return true
			}
		} else if path == a {
			return true
		}
	}
	return false
}
