package archive

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports asserts the package's dependency rule: the standard library,
// go-digest and go-containerregistry's v1 types only; no other regmirror
// package, no fasthttp, no Badger.
func TestImports(t *testing.T) {
	t.Parallel()
	allowed := map[string]bool{
		"github.com/opencontainers/go-digest":                 true,
		"github.com/google/go-containerregistry/pkg/v1":       true,
		"github.com/google/go-containerregistry/pkg/v1/types": true,
	}
	files, err := filepath.Glob("*.go")
	must(t, err)
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		must(t, err)
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		must(t, err)
		checked++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(path, "/")
			if strings.Contains(first, ".") && !allowed[path] {
				t.Errorf("%s imports %q; archive may import only the standard library, go-digest and go-containerregistry's pkg/v1 and pkg/v1/types", name, path)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no source files checked")
	}
}
