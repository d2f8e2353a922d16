package realclient

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"github.com/regmirror/regmirror/imageref"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// RequireEnv is the environment variable that turns "client missing" skips
// into failures when set to "1".
const RequireEnv = "REGMIRROR_REQUIRE_CLIENTS"

// CommandTimeout bounds every external command a helper runs (a pull, an
// inspect...). Daemon start-up has its own deadline (StartTimeout).
var CommandTimeout = 3 * time.Minute

// StartTimeout bounds how long a daemon may take to answer on its socket.
var StartTimeout = 60 * time.Second

// aptPackage names the Debian package that ships each tool.
var aptPackage = map[string]string{
	"skopeo":     "skopeo",
	"dockerd":    "docker.io",
	"docker":     "docker.io",
	"containerd": "containerd",
	"ctr":        "containerd",
	"podman":     "podman",
}

func required() bool { return os.Getenv(RequireEnv) == "1" }

// unavailable skips the test, or fails it when RequireEnv=1.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if required() {
		t.Fatalf("%s (%s=1, so this is a failure, not a skip)", msg, RequireEnv)
	}
	t.Skipf("%s (set %s=1 to make this a failure)", msg, RequireEnv)
}

// Require returns the absolute path of tool, searching $PATH, /usr/sbin and
// /usr/bin. When it is missing the test is skipped (or failed, see
// RequireEnv) with a message naming the apt package to install.
func Require(t testing.TB, tool string) string {
	t.Helper()
	if p, err := lookPath(tool); err == nil {
		return p
	}
	pkg := aptPackage[tool]
	if pkg == "" {
		pkg = tool
	}
	unavailable(t, "%s not found in $PATH, /usr/sbin or /usr/bin: install it with `apt-get install %s`", tool, pkg)
	return ""
}

func lookPath(tool string) (string, error) {
	if p, err := exec.LookPath(tool); err == nil {
		return filepath.Abs(p)
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, tool)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// RequireRoot skips (or fails, see RequireEnv) when not running as root.
func RequireRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "%s needs root (running as uid %d)", what, os.Geteuid())
	}
}

// cleanEnv is the environment for every client: the caller's, minus proxy
// settings (the mirror is on loopback) and Docker CLI/daemon selectors that
// would point the helpers elsewhere, plus the extra entries.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
			"DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH",
			"CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE", "CONTAINERD_SNAPSHOTTER",
			"CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "REGISTRY_AUTH_FILE":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// run executes a command under CommandTimeout and returns its combined
// output. The error, if any, quotes the command line and the output.
func run(env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %v: %w", time.Since(start).Round(time.Millisecond), err)
		}
		return out.String(), fmt.Errorf("%s: %w\n--- output ---\n%s", cmdline(name, args), err, out.String())
	}
	return out.String(), nil
}

// mustRun is run that fails the test on error.
func mustRun(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	out, err := run(env, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func cmdline(name string, args []string) string {
	parts := []string{name}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'{}$") {
			a = fmt.Sprintf("%q", a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// shortTempDir makes a directory with a short path: unix socket paths must
// stay under 108 bytes, and t.TempDir() paths embed the test name. The
// caller removes it.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	base := os.TempDir()
	if len(base) > 32 {
		base = "/tmp"
	}
	d, err := os.MkdirTemp(base, prefix)
	if err != nil {
		t.Fatalf("short temp dir: %v", err)
	}
	return d
}

// removeAll unmounts whatever is still mounted below each dir (deepest
// first, lazily) and removes the dirs, logging rather than failing.
func removeAll(t testing.TB, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		for _, m := range mountsUnder(dir) {
			if err := unmount(m); err != nil {
				t.Logf("realclient: unmount %s: %v", m, err)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("realclient: remove %s: %v", dir, err)
		}
	}
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMountinfo undoes the octal escapes (\040 for space...) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + (c - '0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// logTail returns the last n lines of a daemon log, leaving out gRPC
// connection chatter and plugin-loading lines.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if !strings.Contains(l, "module=grpc") && !strings.Contains(l, `loading plugin \"`) {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// registryOf returns the canonical registry of an image reference the way
// the Docker tools see it (imageref.SplitName): the first path component
// when it looks like a host, else docker.io.
func registryOf(ref string) string {
	reg, _ := imageref.SplitName(strings.TrimPrefix(ref, "docker://"))
	return reg
}

// writeFile writes data to path, failing the test on error.
func writeFile(t testing.TB, path string, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
