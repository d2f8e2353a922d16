package realclient

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Podman runs podman with private, throw-away storage (vfs driver, root and
// runroot in temporary directories, removed in t.Cleanup).
type Podman struct {
	Bin     string
	Root    string
	RunRoot string
	tmp     string
	env     []string
}

// NewPodman prepares a private podman store. It needs root.
func NewPodman(t testing.TB) *Podman {
	t.Helper()
	RequireRoot(t, "podman")
	bin := Require(t, "podman")
	base := t.TempDir()
	p := &Podman{
		Bin:     bin,
		Root:    shortTempDir(t, "rc-pmr-"),
		RunRoot: shortTempDir(t, "rc-pmx-"),
		tmp:     filepath.Join(base, "tmp"),
	}
	t.Cleanup(func() { removeAll(t, p.Root, p.RunRoot) })
	// Own containers.conf and storage.conf, so the host's settings
	// (overlay mount options, systemd cgroups, journald events) don't apply.
	conf := filepath.Join(base, "containers.conf")
	writeFile(t, conf, fmt.Sprintf("[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = %s\ntmp_dir = %s\n",
		strconv.Quote(filepath.Join(base, "events.log")), strconv.Quote(p.tmp)))
	storage := filepath.Join(base, "storage.conf")
	writeFile(t, storage, fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %s\nrunroot = %s\n",
		strconv.Quote(p.Root), strconv.Quote(p.RunRoot)))
	home := filepath.Join(base, "home")
	p.env = cleanEnv("CONTAINERS_CONF="+conf, "CONTAINERS_STORAGE_CONF="+storage,
		"HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_RUNTIME_DIR="+p.RunRoot)
	return p
}

func (p *Podman) args(extra ...string) []string {
	return append([]string{
		"--root", p.Root, "--runroot", p.RunRoot, "--storage-driver", "vfs",
		"--cgroup-manager", "cgroupfs", "--events-backend", "file", "--tmpdir", p.tmp,
	}, extra...)
}

// Podman runs `podman <private storage flags> args...`, failing on error.
func (p *Podman) Podman(t testing.TB, args ...string) string {
	t.Helper()
	return mustRun(t, p.env, p.Bin, p.args(args...)...)
}

// PodmanErr is Podman returning the error instead of failing the test.
func (p *Podman) PodmanErr(args ...string) (string, error) {
	return run(p.env, p.Bin, p.args(args...)...)
}

// PullErr pulls ref using registriesConf (see WriteRegistriesConf) and
// returns the output and error.
func (p *Podman) PullErr(registriesConf, ref string) (string, error) {
	return p.PodmanErr("--registries-conf", registriesConf, "pull", ref)
}

// Pull pulls ref using registriesConf and returns the image's manifest
// digest (podman image inspect's .Digest).
func (p *Podman) Pull(t testing.TB, registriesConf, ref string) string {
	t.Helper()
	if _, err := p.PullErr(registriesConf, ref); err != nil {
		t.Fatal(err)
	}
	return p.Digest(t, ref)
}

// Digest returns podman's recorded manifest digest of the local image ref.
func (p *Podman) Digest(t testing.TB, ref string) string {
	t.Helper()
	return strings.TrimSpace(p.Podman(t, "image", "inspect", "--format", "{{.Digest}}", ref))
}

// PodmanPull pulls ref into a fresh private podman store using
// registriesConf (see WriteRegistriesConf) and returns the pulled image's
// manifest digest.
func PodmanPull(t testing.TB, registriesConf, ref string) string {
	t.Helper()
	return NewPodman(t).Pull(t, registriesConf, ref)
}
