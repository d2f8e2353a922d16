package realclient

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Containerd is a private containerd (Debian's containerd package) with its
// own root, state and socket, started by StartContainerd and stopped in
// t.Cleanup. Images are pulled with `ctr` into the "default" namespace and
// unpacked with the native snapshotter (no overlayfs needed).
type Containerd struct {
	Address string // the gRPC socket path, for `ctr --address`
	Root    string
	State   string
	LogPath string
	CTR     string // the ctr binary
	env     []string
	d       *daemon
}

// StartContainerd starts a private containerd (CRI plugin disabled) and
// waits until `ctr version` answers. It needs root.
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	RequireRoot(t, "containerd")
	bin := Require(t, "containerd")
	ctr := Require(t, "ctr")

	root := shortTempDir(t, "rc-ctd-")
	state := shortTempDir(t, "rc-cts-")
	logDir := t.TempDir()
	c := &Containerd{
		Address: filepath.Join(state, "c.sock"),
		Root:    root,
		State:   state,
		LogPath: filepath.Join(logDir, "containerd.log"),
		CTR:     ctr,
		env:     cleanEnv(),
	}
	cfg := filepath.Join(logDir, "config.toml")
	writeFile(t, cfg, fmt.Sprintf(`version = 2
root = %s
state = %s
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = %s

[ttrpc]
  address = %s

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %s
`, strconv.Quote(root), strconv.Quote(state), strconv.Quote(c.Address),
		strconv.Quote(c.Address+".ttrpc"), strconv.Quote(filepath.Join(root, "opt"))))

	start := time.Now()
	c.d = startDaemon(t, "containerd", c.LogPath, c.env, bin, "--config", cfg, "--log-level", "info")
	t.Cleanup(func() { c.stop(t) })
	c.d.waitReady(t, func() error {
		_, err := run(c.env, ctr, "--address", c.Address, "version")
		return err
	})
	t.Logf("realclient: containerd ready on %s in %v (log %s)", c.Address, time.Since(start).Round(time.Millisecond), c.LogPath)
	return c
}

func (c *Containerd) stop(t testing.TB) {
	t.Helper()
	c.d.stop(t, 15*time.Second)
	if t.Failed() {
		t.Logf("--- containerd log %s (tail) ---\n%s", c.LogPath, logTail(c.LogPath, 80))
	}
	removeAll(t, c.State, c.Root)
}

// Ctr runs `ctr --address <sock> args...`, failing the test on error.
func (c *Containerd) Ctr(t testing.TB, args ...string) string {
	t.Helper()
	return mustRun(t, c.env, c.CTR, append([]string{"--address", c.Address}, args...)...)
}

// CtrErr is Ctr returning the error instead of failing the test.
func (c *Containerd) CtrErr(args ...string) (string, error) {
	return run(c.env, c.CTR, append([]string{"--address", c.Address}, args...)...)
}

// PullWithHostsDir pulls ref (fully qualified, e.g.
// "docker.io/library/alpine:latest") with registry hosts configuration from
// hostsDir (see WriteHostsDir) and returns the digest containerd recorded
// for it (the top-level manifest or index).
func (c *Containerd) PullWithHostsDir(t testing.TB, ref, hostsDir string) string {
	t.Helper()
	if out, err := c.PullWithHostsDirErr(ref, hostsDir); err != nil {
		t.Fatal(err)
	} else if strings.Contains(out, "unpacking") && !strings.Contains(out, "done") {
		t.Fatalf("ctr pull %s: no \"done\" in output:\n%s", ref, out)
	}
	return c.ImageDigest(t, ref)
}

// PullWithHostsDirErr runs the pull and returns output and error.
func (c *Containerd) PullWithHostsDirErr(ref, hostsDir string) (string, error) {
	return c.CtrErr("images", "pull", "--snapshotter", "native", "--hosts-dir", hostsDir, ref)
}

// ImageDigest returns the digest of image ref as listed by `ctr images ls`.
func (c *Containerd) ImageDigest(t testing.TB, ref string) string {
	t.Helper()
	out := c.Ctr(t, "images", "ls")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == ref {
			return f[2]
		}
	}
	t.Fatalf("ctr images ls: %s not found:\n%s", ref, out)
	return ""
}

// RemoveImage deletes ref from containerd's image store (`ctr images rm
// --sync`), so the next pull fetches it again.
func (c *Containerd) RemoveImage(t testing.TB, ref string) {
	t.Helper()
	c.Ctr(t, "images", "rm", "--sync", ref)
}

// HostsConfig is one registry's hosts.toml in a containerd hosts directory.
type HostsConfig struct {
	// Registry is the directory name: "_default" (or "") for every
	// registry, else a registry host such as "docker.io" or "ghcr.io".
	Registry string
	// Mirror is the mirror's URL, e.g. "http://127.0.0.1:5000". With
	// OverridePath it carries the full API path,
	// e.g. "http://127.0.0.1:5000/v2/ghcr.io".
	Mirror       string
	OverridePath bool
	// Server is the upstream to fall back to; by default none for
	// "_default", https://registry-1.docker.io for docker.io and
	// https://<Registry> otherwise.
	Server string
	// Header is sent with every request to the mirror, e.g.
	// {"Authorization": "Basic ..."} for a mirror with access control.
	Header map[string]string
	// CAFile verifies an https mirror's certificate (default: not verified).
	CAFile string
}

// WriteHostsDir writes a hosts directory whose _default/hosts.toml sends
// every registry's pulls to mirrorURL ("http://127.0.0.1:5000"; a bare
// host:port means http) and returns the directory.
func WriteHostsDir(t testing.TB, mirrorURL string) string {
	t.Helper()
	dir := t.TempDir()
	WriteHostsFile(t, dir, HostsConfig{Registry: "_default", Mirror: mirrorURL})
	return dir
}

// WriteHostsFile writes <hostsDir>/<Registry>/hosts.toml for hc.
func WriteHostsFile(t testing.TB, hostsDir string, hc HostsConfig) {
	t.Helper()
	reg := hc.Registry
	if reg == "" {
		reg = "_default"
	}
	mirror := hc.Mirror
	if !strings.Contains(mirror, "://") {
		mirror = "http://" + mirror
	}
	if u, err := url.Parse(mirror); err != nil || u.Host == "" {
		t.Fatalf("bad mirror URL %q: %v", hc.Mirror, err)
	}
	server := hc.Server
	if server == "" && reg != "_default" {
		server = "https://" + reg
		if reg == "docker.io" {
			server = "https://registry-1.docker.io"
		}
	}
	var b strings.Builder
	if server != "" {
		fmt.Fprintf(&b, "server = %s\n\n", strconv.Quote(server))
	}
	fmt.Fprintf(&b, "[host.%s]\n  capabilities = [\"pull\", \"resolve\"]\n", strconv.Quote(mirror))
	switch {
	case strings.HasPrefix(mirror, "https://") && hc.CAFile != "":
		fmt.Fprintf(&b, "  ca = %s\n", strconv.Quote(hc.CAFile))
	case strings.HasPrefix(mirror, "https://"):
		b.WriteString("  skip_verify = true\n")
	}
	if hc.OverridePath {
		b.WriteString("  override_path = true\n")
	}
	if len(hc.Header) > 0 {
		fmt.Fprintf(&b, "  [host.%s.header]\n", strconv.Quote(mirror))
		for k, v := range hc.Header {
			fmt.Fprintf(&b, "    %s = %s\n", strconv.Quote(k), strconv.Quote(v))
		}
	}
	writeFile(t, filepath.Join(hostsDir, reg, "hosts.toml"), b.String())
}
