package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestConfigDockerHubAliases: a registry entry or default_registry naming
// Docker Hub by one of its aliases configures docker.io itself (before,
// "registry.hub.docker.com" or "index.docker.io" made a second registry
// entry no request could reach, since the proxy maps those names to
// docker.io).
func TestConfigDockerHubAliases(t *testing.T) {
	for _, alias := range []string{"registry.hub.docker.com", "index.docker.io", "Registry-1.Docker.IO"} {
		path := filepath.Join(t.TempDir(), "c.toml")
		body := "default_registry = \"" + alias + "\"\n[[registry]]\nname = \"" + alias + "\"\nusername = \"u\"\npassword = \"p\"\n"
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadWith(t, "--config", path)
		if err != nil {
			t.Fatalf("%s: %v", alias, err)
		}
		if len(cfg.Registries) != 1 || cfg.Registries[0].Name != "docker.io" || cfg.Registries[0].Username != "u" ||
			cfg.Registries[0].URL != dockerHubURL || cfg.DefaultRegistry != "docker.io" {
			t.Fatalf("%s: registries %+v, default %q; want one docker.io entry with the credentials", alias, cfg.Registries, cfg.DefaultRegistry)
		}
	}
}
