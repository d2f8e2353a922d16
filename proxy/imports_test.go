package proxy

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps each library in its package: the proxy owns fasthttp
// and talks to Badger and the registry client only through cache and
// upstream.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/dgraph-io/badger", "github.com/google/go-containerregistry", "github.com/urfave/cli", "github.com/BurntSushi/toml", "github.com/regmirror/regmirror/eviction", "github.com/regmirror/regmirror/admin"} {
			if strings.HasPrefix(imp, banned) {
				t.Errorf("proxy imports %s", imp)
			}
		}
	}
}
