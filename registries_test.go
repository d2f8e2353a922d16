package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regmirror/regmirror/internal/testpull"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// Names the multi-registry mirror is configured with.
const (
	ghcrName = "ghcr.io"
	corpName = "registry.corp:5000" // private, with credentials
	corpUser = "mirror"
	corpPass = "s3cret"
	// ghcrAlias is a Host header that means ghcr.io.
	ghcrAlias = "ghcr.mirror.test"
)

// registries is one regmirror in front of three fake registries: Docker Hub
// (the default), ghcr.io and a private registry.corp:5000 reached through
// a testupstream.RepoFront.
type registries struct {
	hub, ghcr, corp *testupstream.Server
	front           *testupstream.RepoFront
	m               *mirror
}

func startRegistries(t *testing.T, mutate ...func(*config)) *registries {
	t.Helper()
	r := &registries{
		hub:  testupstream.Start(t),
		ghcr: testupstream.Start(t),
		corp: testupstream.Start(t, testupstream.WithCredentials(corpUser, corpPass)),
	}
	r.front = testupstream.StartRepoFront(t, r.corp)
	r.m = startMirror(t, r.hub, append([]func(*config){func(c *config) {
		c.Registries = append(c.Registries,
			registryConfig{Name: ghcrName, URL: r.ghcr.URL(), HostAliases: []string{ghcrAlias}},
			registryConfig{Name: corpName, URL: r.front.URL, endpointAuth: endpointAuth{Username: corpUser, Password: corpPass}, Private: true},
		)
	}}, mutate...)...)
	return r
}

// TestRegistryConfig: the [[registry]] keys this feature adds, and their
// validation.
func TestRegistryConfig(t *testing.T) {
	dir := t.TempDir()
	dockerConfig := filepath.Join(dir, "config.json")
	if err := os.WriteFile(dockerConfig, []byte(`{"auths":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(toml string) (config, error) {
		t.Helper()
		path := filepath.Join(dir, "regmirror.toml")
		if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := defaultConfig()
		if err := loadConfigFile(&cfg, path); err != nil {
			return cfg, err
		}
		return cfg, cfg.finish()
	}
	cfg, err := load(`docker_config = "` + dockerConfig + `"
[[registry]]
name = "GHCR.io"
host_aliases = ["GHCR.Mirror.lan"]
[[registry]]
name = "registry.corp:5000"
private = true
[[registry]]
name = "quay.io"
username = "u"
password = "p"
`)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]registryConfig{}
	for _, rc := range cfg.Registries {
		byName[rc.Name] = rc
	}
	if g := byName["ghcr.io"]; g.URL != "https://ghcr.io" || g.HostAliases[0] != "ghcr.mirror.lan" || g.DockerConfig != dockerConfig || g.keychain() == nil {
		t.Errorf("ghcr.io: %+v", g)
	}
	if q := byName["quay.io"]; q.DockerConfig != "" || q.keychain() != nil {
		t.Errorf("quay.io has a username: the global docker_config must not apply: %+v", q)
	}
	if p := cfg.privateRegistries(); !p["registry.corp:5000"] || len(p) != 1 {
		t.Errorf("private registries %v", p)
	}
	if h := byName["docker.io"]; h.URL != dockerHubURL || h.DockerConfig != dockerConfig {
		t.Errorf("docker.io: %+v", h)
	}

	for _, c := range []struct{ toml, want string }{
		{"[[registry]]\nname = \"registry.corp\"\nprivate = true\n", "needs credentials"},
		{"[[registry]]\nname = \"a.io\"\ndocker_config = \"/nonexistent/config.json\"\n", "docker_config"},
		{"[[registry]]\nname = \"https://a.io\"\n", "host[:port]"},
		{"[[registry]]\nname = \"a.io/x\"\n", "host[:port]"},
		{"[[registry]]\nname = \"a.io\"\nhost_aliases = [\"m.lan\"]\n[[registry]]\nname = \"b.io\"\nhost_aliases = [\"M.lan\"]\n", "host alias"},
	} {
		if _, err := load(c.toml); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want one about %q", c.toml, err, c.want)
		}
	}
	// A URL with credentials in it is refused without repeating them.
	for _, key := range []string{"url = ", "mirrors = [{ url = "} {
		toml := "[[registry]]\nname = \"r.example\"\n" + key + "\"https://bob:hunter2@r.example/v2\""
		if strings.HasPrefix(key, "mirrors") {
			toml += " }]"
		}
		_, err := load(toml)
		if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "e.g. https://r.example") {
			t.Errorf("%s with a password in it: err = %v; want it refused, the password not shown, the example its host", key, err)
		}
	}

	// The example's registry section stays valid, commented entries
	// included.
	example, err := os.ReadFile("config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(example), "# Upstream registries.")
	if i < 0 {
		t.Fatal("config.example.toml: no registry section")
	}
	section := string(example[i:])
	if _, err := load(section); err != nil {
		t.Errorf("config.example.toml registry section: %v", err)
	}
	// Uncommented, the documented entries still decode (syntax, known keys).
	var lines []string
	for _, line := range strings.Split(section, "\n") {
		if l, ok := strings.CutPrefix(line, "# "); ok && (l == "[[registry]]" || tomlKey.MatchString(l)) {
			line = l
		}
		lines = append(lines, line)
	}
	path := filepath.Join(dir, "uncommented.toml")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	un := defaultConfig()
	if err := loadConfigFile(&un, path); err != nil {
		t.Errorf("config.example.toml registry section, uncommented: %v", err)
	} else if len(un.Registries) < 7 {
		t.Errorf("config.example.toml documents %d registries, want docker.io and six examples", len(un.Registries))
	}
}

var tomlKey = regexp.MustCompile(`^[a-z_]+ = `)

// pullNS pulls registry/repo:tag through m the way containerd asks (?ns=),
// verifying every blob; it returns the manifest's digest.
func pullNS(t *testing.T, m *mirror, registry, repo, tag string) digest.Digest {
	t.Helper()
	return testpull.NS(t, m.url, registry, repo, tag)
}
