package cache

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps the package's job narrow: storage only. It may use the
// standard library, Badger and go-digest, and nothing of the rest of the
// project or of the HTTP and registry-client libraries.
func TestImports(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goTool, "list", "-json", "-deps", "-test=false", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	type pkg struct {
		ImportPath  string
		Standard    bool
		Imports     []string
		TestImports []string
	}
	var self pkg
	var deps []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.ImportPath == "github.com/regmirror/regmirror/cache" {
			self = p
		}
		deps = append(deps, p)
	}
	if self.ImportPath == "" {
		t.Fatal("go list did not describe the cache package")
	}
	allowed := []string{"github.com/dgraph-io/badger/v4", "github.com/opencontainers/go-digest"}
	isAllowed := func(path string) bool {
		if !strings.Contains(strings.SplitN(path, "/", 2)[0], ".") {
			return true // standard library
		}
		for _, a := range allowed {
			if path == a || strings.HasPrefix(path, a+"/") {
				return true
			}
		}
		return false
	}
	for _, imp := range append(self.Imports, self.TestImports...) {
		if !isAllowed(imp) {
			t.Errorf("cache imports %s; only the standard library, Badger and go-digest are allowed", imp)
		}
	}
	forbidden := []string{
		"github.com/regmirror/regmirror/",
		"github.com/valyala/fasthttp",
		"github.com/google/go-containerregistry",
		"github.com/urfave/cli",
		"github.com/BurntSushi/toml",
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d.ImportPath, f) && d.ImportPath != self.ImportPath {
				t.Errorf("cache depends on %s", d.ImportPath)
			}
		}
	}
}
