package main

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzConfig: whatever the file holds, loading and checking it answers
// with a config or an error, never a panic.
func FuzzConfig(f *testing.F) {
	if b, err := os.ReadFile("config.example.toml"); err == nil {
		f.Add(string(b))
	}
	f.Add("[[registry]]\nname = \"ghcr.io\"\nhost_aliases = [\"a\", \"A\"]\nprivate = true\n")
	f.Add("tag_ttl = \"-5m\"\n[server]\nmax_connections = -1\n[cache]\nmax_size = \"80%\"\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, text string) {
		path := filepath.Join(dir, "regmirror.toml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		c := defaultConfig()
		if err := loadConfigFile(&c, path); err != nil {
			return
		}
		_ = c.finish()
	})
}
