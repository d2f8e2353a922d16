package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/regmirror/regmirror/internal/testpull"
)

// metricValue reads a sample (or a family's sum) from m's /metrics.
func metricValue(t testing.TB, m *mirror, name string) float64 {
	t.Helper()
	return testpull.Metric(t, m.url, name)
}

// TestPolicyExplain: the command reads the config only and names the rule
// that applies, with why the earlier ones did not.
func TestPolicyExplain(t *testing.T) {
	dir := t.TempDir()
	cfgFile := dir + "/regmirror.toml"
	writeFile(t, cfgFile, `data_dir = "`+dir+`/data"
tag_ttl = "10m"
[[tag_policy]]
match = "docker.io/library/*:[0-9]*.[0-9]*.[0-9]*"
immutable = true
[[tag_policy]]
match = "**:latest"
ttl = "1m"
stale_while_revalidate = true
`)
	cases := []struct{ image, want string }{
		{"alpine:3.20.1", "applies:  rule 1 (docker.io/library/*:[0-9]*.[0-9]*.[0-9]*), the first that matches: immutable"},
		{"alpine", `tag "latest" does not`},
		{"alpine", "applies:  rule 2 (**:latest)"},
		{"alpine", "revalidated in the background"},
		{"docker.io/org/app:v1", "applies:  no rule matched: the global tag_ttl (10m0s)"},
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		if err := newCLI(&out, &errOut).Run([]string{"regmirror", "policy", "explain", "-c", cfgFile, c.image}); err != nil {
			t.Fatalf("explain %s: %v", c.image, err)
		}
		if !strings.Contains(out.String(), c.want) {
			t.Errorf("explain %s: output lacks %q:\n%s", c.image, c.want, out.String())
		}
	}
	writeFile(t, cfgFile, "[[tag_policy]]\nmatch = \"**\"\nimmutable = true\nttl = \"1m\"\n")
	var out bytes.Buffer
	if err := newCLI(&out, &out).Run([]string{"regmirror", "policy", "explain", "-c", cfgFile, "alpine"}); err == nil ||
		!strings.Contains(err.Error(), "immutable and ttl exclude each other") {
		t.Errorf("a contradictory rule: %v", err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
