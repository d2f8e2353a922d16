package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// What a new user trips over (issue 9, items 1 to 6), each proven here.

// TestHelperProcessMain is not a test: it runs main() with the arguments
// in REGMIRROR_HELPER_ARGS when runMain re-executes the test binary, so
// that exit codes and stderr are the real ones without building a binary.
func TestHelperProcessMain(t *testing.T) {
	args := os.Getenv("REGMIRROR_HELPER_ARGS")
	if args == "" {
		return
	}
	os.Args = append([]string{"regmirror"}, strings.Split(args, "\x1f")...)
	main()
	os.Exit(0)
}

// runMain runs regmirror's main with args in a child process and returns
// its exit code, stdout and stderr.
func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessMain$")
	cmd.Env = append(os.Environ(), "REGMIRROR_HELPER_ARGS="+strings.Join(args, "\x1f"))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("running main: %v", err)
	return 0, "", ""
}

// TestStartupFailuresAreOneLine (item 1): a port in use, a registry url
// without a scheme, a config that does not parse, a bad budget: each is
// one line on stderr and exit code 1, never a stack trace, and (item 6)
// nothing is written to the data dir before the config is known good.
func TestStartupFailuresAreOneLine(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	write := func(name, content string) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	noScheme := write("noscheme.toml", "[[registry]]\nname = \"ghcr.io\"\nurl = \"ghcr.io\"\n")
	badType := write("badtype.toml", "listen = 5000\n")
	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"port in use", "address already in use", []string{"--listen", busy.Addr().String()}},
		{"registry url without scheme", `url "ghcr.io": want http(s)://host[:port]`, []string{"--listen", "127.0.0.1:0", "--config", noScheme}},
		{"config type", `incompatible types`, []string{"--listen", "127.0.0.1:0", "--config", badType}},
		{"bad budget", `cache.max_size`, []string{"--listen", "127.0.0.1:0", "--max-size", "lots"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			code, _, stderr := runMain(t, append([]string{"serve", "--data-dir", dataDir}, tc.args...)...)
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "regmirror: ") || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr (want one line with %q):\n%s", code, tc.want, stderr)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Errorf("a stack trace:\n%s", stderr)
			}
			if _, err := os.Stat(dataDir); err == nil {
				t.Errorf("the data dir was created by a start that failed on its config")
			}
		})
	}
}

// TestConfigValidatedBeforeDataDir (item 6): the whole config (sizes,
// watermarks, registries) is checked before the data dir is created or
// opened, by every command that opens it.
func TestConfigValidatedBeforeDataDir(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{"[cache]\nmax_size = \"lots\"\n", "cache.max_size"},
		{"[cache]\nmax_size = \"150%\"\n", "cache.max_size"},
		{"[cache]\nmin_free = \"-1GiB\"\n", "cache.min_free"},
		{"[cache]\nhigh_watermark = 0.5\nlow_watermark = 0.9\n", "watermark"},
		{"[cache]\nevict_interval = \"-1s\"\n", "cache.evict_interval"},
		{"[[registry]]\nname = \"quay.io\"\nurl = \"quay.io\"\n", `url "quay.io"`},
		{"[[registry]]\nname = \"quay.io\"\nurl = \"ftp://quay.io\"\n", `url "ftp://quay.io"`},
		{"[s3]\nendpoint = \"s3.example\"\nbucket = \"b\"\n", "[s3]"},
		{"[s3]\nendpoint = \"https://s3.example\"\n", "[s3]"},
		{"[s3]\nendpoint = \"https://s3.example\"\nbucket = \"b\"\nsecret_key_env = \"REGMIRROR_TEST_UNSET_S3_SECRET\"\n", "s3.secret_key_env"},
	} {
		dataDir := filepath.Join(t.TempDir(), "data")
		conf := filepath.Join(t.TempDir(), "c.toml")
		if err := os.WriteFile(conf, []byte(tc.conf), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []string{"du", "gc"} {
			_, err := runCLIErr(cmd, "--config", conf, "--data-dir", dataDir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s with %q: %v, want an error naming %s", cmd, tc.conf, err, tc.want)
			}
			if _, err := os.Stat(dataDir); err == nil {
				t.Fatalf("%s with %q created the data dir before refusing the config", cmd, tc.conf)
			}
		}
	}
}

// TestUpstreamFlagsOnEveryUpstreamCommand (item 2): every command that can
// make the mirror fetch from upstream takes the same upstream flags and
// REGMIRROR_* twins as serve; REGMIRROR_UPSTREAM_URL steers preload.
func TestUpstreamFlagsOnEveryUpstreamCommand(t *testing.T) {
	want := map[string][]string{}
	for _, f := range upstreamFlags() {
		want[f.Names()[0]] = f.(*cli.StringFlag).EnvVars
	}
	app := newCLI(&strings.Builder{}, &strings.Builder{})
	for _, name := range []string{"serve", "preload", "verify"} {
		cmd := app.Command(name)
		got := map[string][]string{}
		for _, f := range cmd.Flags {
			if sf, ok := f.(*cli.StringFlag); ok {
				got[sf.Name] = sf.EnvVars
			}
		}
		for flag, env := range want {
			if fmt.Sprint(got[flag]) != fmt.Sprint(env) {
				t.Errorf("%s: --%s with env %v, want env %v", name, flag, got[flag], env)
			}
		}
	}

	up := testupstream.Start(t)
	up.PushRandomOCIImage(t, "org/app", "v1", 1, 4<<10)
	dataDir := t.TempDir()
	t.Setenv("REGMIRROR_UPSTREAM_URL", up.URL())
	out := runCLI(t, "preload", "--data-dir", dataDir, "--log-level", "warn", "org/app:v1")
	if !strings.Contains(out, "preloaded 1 of 1 images") {
		t.Fatalf("preload with REGMIRROR_UPSTREAM_URL:\n%s", out)
	}
	out = runCLI(t, "du", "--data-dir", dataDir)
	if !strings.Contains(out, "pinned:    ") || strings.Contains(out, "pinned:    0 B") {
		t.Errorf("du after the preload:\n%s", out)
	}
}

// TestGCMaxSizeWithRunningServer (item 3): gc and du reached through a
// running server refuse a --max-size the server does not use, instead of
// silently evicting to the server's budget; the server's own value is
// fine (a container's environment is shared by server and commands).
func TestGCMaxSizeWithRunningServer(t *testing.T) {
	m := startMirror(t, nil, func(c *config) { c.Cache.MaxSize = "1GiB" })
	for _, cmd := range []string{"gc", "du"} {
		_, err := runCLIErr(cmd, "--data-dir", m.cfg.DataDir, "--server", m.url, "--max-size", "100MiB")
		if err == nil || !strings.Contains(err.Error(), "--max-size 100MiB") || !strings.Contains(err.Error(), m.url) {
			t.Errorf("%s --max-size 100MiB through the server: %v, want a refusal naming the server", cmd, err)
		}
		runCLI(t, cmd, "--data-dir", m.cfg.DataDir, "--server", m.url, "--max-size", "1GiB")
	}
	t.Setenv("REGMIRROR_MAX_SIZE", "2GiB")
	if _, err := runCLIErr("gc", "--data-dir", m.cfg.DataDir, "--server", m.url); err == nil {
		t.Error("gc with REGMIRROR_MAX_SIZE unlike the server's budget: accepted")
	}
}

// TestCommandsFindTheServerFromTheDataDir (item 4): the server writes its
// URL next to admin-token, and du, gc, pin find it there whatever port it
// listens on; without it, the error says to give --server.
func TestCommandsFindTheServerFromTheDataDir(t *testing.T) {
	m := startMirror(t, nil)
	got, err := admin.ReadServerURL(m.cfg.DataDir)
	if err != nil || got != m.url {
		t.Fatalf("%s holds %q, %v; want %s", admin.ServerURLFile, got, err, m.url)
	}
	// listen in the config names a port nobody answers on, as when the
	// server was started with other flags than the command.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	conf := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "listen = %q\ndata_dir = %q\n", closed.Addr().String(), m.cfg.DataDir), 0o600); err != nil {
		t.Fatal(err)
	}
	out := runCLI(t, "du", "--config", conf)
	if !strings.Contains(out, "data dir:  "+m.cfg.DataDir) {
		t.Errorf("du found no server:\n%s", out)
	}
	runCLI(t, "gc", "--config", conf)

	if err := os.Remove(filepath.Join(m.cfg.DataDir, admin.ServerURLFile)); err != nil {
		t.Fatal(err)
	}
	_, err = runCLIErr("du", "--config", conf)
	if err == nil || !strings.Contains(err.Error(), "--server") || !strings.Contains(err.Error(), "in use") {
		t.Errorf("du with the server's address unknown: %v, want a hint to give --server", err)
	}
}

// TestHelpShowsEachDefaultOnce (item 5): no flag's help states two
// defaults ("(default 5m) (default: 0s)"); --version prints the version
// once and succeeds.
func TestHelpShowsEachDefaultOnce(t *testing.T) {
	app := newCLI(&strings.Builder{}, &strings.Builder{})
	for _, cmd := range app.Commands {
		out, err := runCLIErr(cmd.Name, "--help")
		if err != nil {
			t.Fatalf("%s --help: %v", cmd.Name, err)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Count(line, "(default") > 1 {
				t.Errorf("%s --help: %q", cmd.Name, strings.TrimSpace(line))
			}
		}
	}
	out, err := runCLIErr("serve", "--help")
	if err != nil || !strings.Contains(out, `(default: "`+defaultConfig().Listen+`")`) || !strings.Contains(out, "(default: 5m0s)") {
		t.Errorf("serve --help does not show the defaults of defaultConfig:\n%s", out)
	}
	code, stdout, stderr := runMain(t, "--version")
	if code != 0 || stdout != "regmirror "+buildVersion()+"\n" || stderr != "" {
		t.Errorf("--version: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
