package main

import (
	"bytes"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/regmirror/regmirror/internal/testpull"
	"github.com/regmirror/regmirror/internal/testupstream"
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

// TestTagTTLZero: tag_ttl = "0s" revalidates the tag on every request (a
// HEAD each), as policy explain says, instead of being taken for "unset"
// and the default 5 minutes.
func TestTagTTLZero(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/alpine", "latest", 1, 1000)
	m := startMirror(t, up, func(c *config) { c.TagTTL = duration{0} })
	pullAll(t, m, "alpine:latest")
	heads := up.ManifestRequests(http.MethodHead)
	for range 3 {
		pullAll(t, m, "alpine:latest")
	}
	if n := up.ManifestRequests(http.MethodHead) - heads; n != 3 {
		t.Errorf("3 pulls with tag_ttl 0s sent %d HEADs upstream, want 3", n)
	}
	var out strings.Builder
	if err := explainPolicy(&out, m.cfg, "alpine"); err != nil || !strings.Contains(out.String(), "every request") {
		t.Errorf("policy explain: %v\n%s", err, out.String())
	}
}
