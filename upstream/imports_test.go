package upstream

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package's one job: the standard library,
// go-containerregistry's client packages, the Docker CLI's config reader
// (config.json and credential helpers) and go-digest; no other project
// package, no fasthttp, no badger.
func TestImports(t *testing.T) {
	allowed := []string{
		"github.com/docker/cli/cli/config", // Docker config.json and credential helpers, as authn reads them
		"github.com/docker/cli/cli/config/types",
		"github.com/google/go-containerregistry/pkg/authn",
		"github.com/google/go-containerregistry/pkg/name",
		"github.com/google/go-containerregistry/pkg/v1/remote/transport",
		"github.com/opencontainers/go-digest",
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		af, err := parser.ParseFile(fset, f, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, is := range af.Imports {
			p, _ := strconv.Unquote(is.Path.Value)
			first, _, _ := strings.Cut(p, "/")
			if !strings.Contains(first, ".") {
				continue // standard library
			}
			ok := false
			for _, a := range allowed {
				ok = ok || p == a
			}
			if !ok {
				t.Errorf("%s imports %s", f, p)
			}
		}
	}
}
