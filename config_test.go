package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// loadWith runs loadConfig as the serve command would see args.
func loadWith(t *testing.T, args ...string) (config, error) {
	t.Helper()
	var cfg config
	var loadErr error
	cmd := serveCommand()
	cmd.Action = func(c *cli.Context) error {
		cfg, loadErr = loadConfig(c)
		return nil
	}
	app := &cli.App{Commands: []*cli.Command{cmd}, Writer: &bytes.Buffer{}, ErrWriter: &bytes.Buffer{}}
	if err := app.Run(append([]string{"regmirror", "serve"}, args...)); err != nil {
		t.Fatal(err)
	}
	return cfg, loadErr
}

func TestConfigPrecedence(t *testing.T) {
	for _, k := range []string{"REGMIRROR_LISTEN", "REGMIRROR_TAG_TTL", "REGMIRROR_DATA_DIR", "REGMIRROR_CONFIG", "REGMIRROR_UPSTREAM_URL", "REGMIRROR_OFFLINE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	cfg, err := loadWith(t)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":5000" || cfg.DataDir != "./data" || cfg.TagTTL.Duration != 5*time.Minute ||
		cfg.registry("docker.io").URL != "https://registry-1.docker.io" || cfg.Offline {
		t.Fatalf("defaults: %+v", cfg)
	}

	file := filepath.Join(t.TempDir(), "regmirror.toml")
	os.WriteFile(file, []byte("listen = \":6000\"\ntag_ttl = \"1m\"\ndata_dir = \"/file\"\noffline = true\n"), 0o600)
	cfg, err = loadWith(t, "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":6000" || cfg.TagTTL.Duration != time.Minute || cfg.DataDir != "/file" || !cfg.Offline {
		t.Fatalf("file over defaults: %+v", cfg)
	}

	t.Setenv("REGMIRROR_LISTEN", ":7000")
	t.Setenv("REGMIRROR_TAG_TTL", "2m")
	cfg, err = loadWith(t, "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":7000" || cfg.TagTTL.Duration != 2*time.Minute || cfg.DataDir != "/file" {
		t.Fatalf("env over file: %+v", cfg)
	}

	cfg, err = loadWith(t, "--config", file, "--listen", ":8000", "--upstream-url", "http://127.0.0.1:1", "--offline=false")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":8000" || cfg.TagTTL.Duration != 2*time.Minute || cfg.registry("docker.io").URL != "http://127.0.0.1:1" || cfg.Offline {
		t.Fatalf("flags over env: %+v", cfg)
	}

	// The upstream password from the environment (or the flag) beats the
	// file's in every form: password_file and password_env too.
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("from-file\n"), 0o600)
	t.Setenv("FILE_PW", "from-file-env")
	for _, source := range []string{"password_file = \"" + pw + "\"", "password_env = \"FILE_PW\"", "password = \"from-file\""} {
		os.WriteFile(file, []byte("[[registry]]\nname = \"docker.io\"\nusername = \"bob\"\n"+source+"\n"), 0o600)
		t.Setenv("REGMIRROR_UPSTREAM_PASSWORD", "from-env")
		cfg, err = loadWith(t, "--config", file)
		if err != nil || cfg.registry("docker.io").Password != "from-env" {
			t.Errorf("file's %s, REGMIRROR_UPSTREAM_PASSWORD set: password %q, %v; want the environment's", source, cfg.registry("docker.io").Password, err)
		}
		cfg, err = loadWith(t, "--config", file, "--upstream-password", "from-flag")
		if err != nil || cfg.registry("docker.io").Password != "from-flag" {
			t.Errorf("file's %s, --upstream-password: password %q, %v; want the flag's", source, cfg.registry("docker.io").Password, err)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"listen = 5000\n":                  "listen",
		"typo_key = 1\n":                   "unknown keys: typo_key",
		"tag_ttl = \"soon\"\n":             "tag_ttl",
		"default_registry = \"quay.io\"\n": "default_registry",
		"[[registry]]\nname = \"\"\n":      "no name",
		"[cache]\nmax_size = \"lots\"\n":   "",
		"[[registry]]\nname = \"docker.io\"\nallow_private_addresses = [\"lan\"]\n": "allow_private_addresses",
	}
	for body, want := range cases {
		path := filepath.Join(dir, "c.toml")
		os.WriteFile(path, []byte(body), 0o600)
		_, err := loadWith(t, "--config", path)
		if want == "" {
			continue // checked when the cache opens; see below
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config %q: err %v, want it to mention %q", body, err, want)
		}
	}
	if _, err := loadWith(t, "--config", filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("a missing config file was accepted")
	}
	var stderr bytes.Buffer
	err := newCLI(&bytes.Buffer{}, &stderr).Run([]string{"regmirror", "du", "--data-dir", t.TempDir(), "--max-size", "lots"})
	if err == nil || !strings.Contains(err.Error(), "max_size") {
		t.Errorf("a bad max_size: %v", err)
	}
}

func TestExampleConfigLoads(t *testing.T) {
	if _, err := loadWith(t, "--config", "config.example.toml"); err != nil {
		t.Fatalf("config.example.toml: %v", err)
	}
}

func TestAllowPrivateAddresses(t *testing.T) {
	r := registryConfig{Name: "r", AllowPrivateAddresses: []string{"10.1.2.3", "::ffff:10.9.9.9", "10.20.0.7/24", "fd00::/8", "::ffff:10.30.0.0/112"}}
	if err := r.parseAllowPrivate(); err != nil {
		t.Fatal(err)
	}
	want := []string{"10.1.2.3/32", "10.9.9.9/32", "10.20.0.0/24", "fd00::/8", "10.30.0.0/16"}
	if len(r.allowPrivate) != len(want) {
		t.Fatalf("%v", r.allowPrivate)
	}
	for i, p := range r.allowPrivate {
		if p.String() != want[i] {
			t.Errorf("%d: %s, want %s", i, p, want[i])
		}
	}
}
