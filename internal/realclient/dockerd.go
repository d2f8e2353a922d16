package realclient

import (
	"encoding/json"
	"github.com/regmirror/regmirror/imageref"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Dockerd is a private Docker daemon (Debian's docker.io) with its own data
// root, exec root and socket, started by StartDockerd and stopped in
// t.Cleanup.
type Dockerd struct {
	Host     string // "unix:///…/d.sock", for `docker --host`
	Socket   string // the socket path
	DataRoot string
	ExecRoot string
	LogPath  string // dockerd's stdout+stderr; its tail is logged when the test fails
	CLI      string // the docker client binary used
	env      []string
	d        *daemon
}

// StartDockerd starts dockerd with mirrorURL as --registry-mirror (if not
// empty; "127.0.0.1:5000" is taken as "http://127.0.0.1:5000") and the
// extra dockerd arguments, waits until it answers on its socket and
// registers its shutdown with t.Cleanup. It needs root.
//
// The daemon uses vfs storage, no bridge and no iptables, so it runs in a
// plain sandbox and needs no kernel modules; it starts its own managed
// containerd under ExecRoot. The mirror's host:port is also passed as
// --insecure-registry, so a plain-HTTP mirror works on any address (Docker
// already treats 127.0.0.0/8 as insecure).
func StartDockerd(t testing.TB, mirrorURL string, extraArgs ...string) *Dockerd {
	t.Helper()
	RequireRoot(t, "dockerd")
	bin := Require(t, "dockerd")
	cli := dockerCLI(t, bin)

	dataRoot := shortTempDir(t, "rc-dkd-")
	execRoot := shortTempDir(t, "rc-dkx-")
	logDir := t.TempDir()
	dk := &Dockerd{
		Socket:   filepath.Join(execRoot, "d.sock"),
		DataRoot: dataRoot,
		ExecRoot: execRoot,
		LogPath:  filepath.Join(logDir, "dockerd.log"),
		CLI:      cli,
	}
	dk.Host = "unix://" + dk.Socket
	if len(dk.Socket) >= 104 {
		removeAll(t, dataRoot, execRoot)
		t.Fatalf("dockerd socket path %q is too long for a unix socket", dk.Socket)
	}
	// An empty config file: a host /etc/docker/daemon.json (mirrors,
	// storage driver...) would conflict with our flags.
	cfg := filepath.Join(logDir, "daemon.json")
	writeFile(t, cfg, "{}\n")
	// The CLI reads its config (credentials, contexts) from DOCKER_CONFIG.
	dk.env = cleanEnv("DOCKER_CONFIG=" + filepath.Join(logDir, "cli"))

	args := []string{
		"--config-file", cfg,
		"--data-root", dataRoot,
		"--exec-root", execRoot,
		"--pidfile", filepath.Join(execRoot, "docker.pid"),
		"--host", dk.Host,
		"--storage-driver=vfs",
		"--iptables=false",
		"--ip6tables=false",
		"--ip-masq=false",
		"--bridge=none",
		"--log-level=info",
	}
	if mirrorURL != "" {
		if !strings.Contains(mirrorURL, "://") {
			mirrorURL = "http://" + mirrorURL
		}
		u, err := url.Parse(mirrorURL)
		if err != nil || u.Host == "" {
			removeAll(t, dataRoot, execRoot)
			t.Fatalf("bad mirror URL %q: %v", mirrorURL, err)
		}
		args = append(args, "--registry-mirror", mirrorURL)
		if u.Scheme == "http" {
			args = append(args, "--insecure-registry", u.Host)
		}
	}
	args = append(args, extraArgs...)

	start := time.Now()
	dk.d = startDaemon(t, "dockerd", dk.LogPath, cleanEnv(), bin, args...)
	t.Cleanup(func() { dk.stop(t) })
	dk.d.waitReady(t, func() error {
		if _, err := os.Stat(dk.Socket); err != nil {
			return err
		}
		_, err := run(dk.env, cli, "--host", dk.Host, "version", "--format", "{{.Server.Version}}")
		return err
	})
	t.Logf("realclient: dockerd ready on %s in %v (log %s)", dk.Host, time.Since(start).Round(time.Millisecond), dk.LogPath)
	return dk
}

// dockerCLI picks the docker client: the one beside dockerd (Debian's, same
// version as the daemon) if present, else the first in $PATH.
func dockerCLI(t testing.TB, dockerd string) string {
	t.Helper()
	sibling := filepath.Join(filepath.Dir(dockerd), "..", "bin", "docker")
	for _, p := range []string{filepath.Join(filepath.Dir(dockerd), "docker"), filepath.Clean(sibling), "/usr/bin/docker"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return Require(t, "docker")
}

func (dk *Dockerd) stop(t testing.TB) {
	t.Helper()
	dk.d.stop(t, 20*time.Second)
	// dockerd stops its managed containerd; make sure, in case it was killed.
	killPIDFile(filepath.Join(dk.ExecRoot, "containerd", "containerd.pid"), dk.ExecRoot)
	if t.Failed() {
		t.Logf("--- dockerd log %s (tail) ---\n%s", dk.LogPath, logTail(dk.LogPath, 80))
	}
	removeAll(t, dk.DataRoot, dk.ExecRoot)
}

// Docker runs `docker --host <this daemon> args...` and returns its
// combined output, failing the test (with the output) on error.
func (dk *Dockerd) Docker(t testing.TB, args ...string) string {
	t.Helper()
	return mustRun(t, dk.env, dk.CLI, append([]string{"--host", dk.Host}, args...)...)
}

// DockerErr is Docker that returns the error instead of failing the test.
func (dk *Dockerd) DockerErr(args ...string) (string, error) {
	return run(dk.env, dk.CLI, append([]string{"--host", dk.Host}, args...)...)
}

// Pull runs `docker pull ref`, failing the test with the output on error.
func (dk *Dockerd) Pull(t testing.TB, ref string) string {
	t.Helper()
	return dk.Docker(t, "pull", ref)
}

// PullErr runs `docker pull ref` and returns the output and error, for
// tests that expect a pull to fail.
func (dk *Dockerd) PullErr(ref string) (string, error) {
	return dk.DockerErr("pull", ref)
}

// RepoDigests returns the image's RepoDigests ("alpine@sha256:…").
func (dk *Dockerd) RepoDigests(t testing.TB, ref string) []string {
	t.Helper()
	out := dk.Docker(t, "image", "inspect", "--format", "{{json .RepoDigests}}", ref)
	var ds []string
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &ds); err != nil {
		t.Fatalf("docker image inspect %s: parse RepoDigests %q: %v", ref, out, err)
	}
	return ds
}

// RepoDigest returns the manifest digest ("sha256:…") the daemon recorded
// for ref: the digest part of its first RepoDigest. With several (the image
// was pulled under several names) it prefers the one for ref's repository.
func (dk *Dockerd) RepoDigest(t testing.TB, ref string) string {
	t.Helper()
	ds := dk.RepoDigests(t, ref)
	if len(ds) == 0 {
		t.Fatalf("image %s has no RepoDigests", ref)
	}
	pick := ds[0]
	repo := repoOf(ref)
	for _, d := range ds {
		if r, _, _ := strings.Cut(d, "@"); repoOf(r) == repo {
			pick = d
			break
		}
	}
	_, dig, ok := strings.Cut(pick, "@")
	if !ok {
		t.Fatalf("image %s: malformed RepoDigest %q", ref, pick)
	}
	return dig
}

// repoOf normalises a reference to registry/repository without tag or
// digest ("alpine" -> "docker.io/library/alpine").
func repoOf(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	reg, repo := imageref.SplitName(ref)
	return reg + "/" + repo
}

// ImageID returns the image ID ("sha256:…" of the config) of ref.
func (dk *Dockerd) ImageID(t testing.TB, ref string) string {
	t.Helper()
	return strings.TrimSpace(dk.Docker(t, "image", "inspect", "--format", "{{.Id}}", ref))
}

// Remove deletes ref from the daemon (`docker image rm --force`), so the
// next Pull fetches it again.
func (dk *Dockerd) Remove(t testing.TB, ref string) {
	t.Helper()
	dk.Docker(t, "image", "rm", "--force", ref)
}

// HasImage reports whether the daemon has ref.
func (dk *Dockerd) HasImage(ref string) bool {
	_, err := dk.DockerErr("image", "inspect", "--format", "{{.Id}}", ref)
	return err == nil
}
