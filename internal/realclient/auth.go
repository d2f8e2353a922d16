package realclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Helpers for mirrors with access control: credentials for skopeo and
// podman, headers for containerd, certs.d for dockerd.

// SkopeoCopyAuthErr is SkopeoCopyErr with the caller's credential flags
// instead of --src-no-creds: "--src-creds", "user:password" (which
// containers/image sends only to the registry named in srcRef, never to a
// registries.conf mirror), or "--src-authfile", path (an auth.json whose
// entry for the mirror's host is used for the mirror). Add
// "--src-tls-verify=false" to pull from a plain-HTTP mirror by its address.
func SkopeoCopyAuthErr(t testing.TB, registriesConf, srcRef, destDir string, authFlags ...string) (string, error) {
	t.Helper()
	bin := Require(t, "skopeo")
	args := append(skopeoArgs(t, registriesConf), "copy", "--all", "--preserve-digests", "--retry-times", "0")
	args = append(args, authFlags...)
	args = append(args, "docker://"+strings.TrimPrefix(srcRef, "docker://"), "oci:"+destDir)
	return run(skopeoEnv(t), bin, args...)
}

// SkopeoLoginErr runs `skopeo login` against host (plain HTTP or
// unverified TLS) with an auth file of the caller's.
func SkopeoLoginErr(t testing.TB, authFile, host, user, password string) (string, error) {
	t.Helper()
	bin := Require(t, "skopeo")
	return run(skopeoEnv(t), bin, "login", "--tls-verify=false", "--authfile", authFile,
		"--username", user, "--password", password, host)
}

// LoginErr runs `podman login` to host (plain HTTP allowed) with this
// podman's private auth file ($XDG_RUNTIME_DIR/containers/auth.json).
func (p *Podman) LoginErr(host, user, password string) (string, error) {
	return p.PodmanErr("login", "--tls-verify=false", "--username", user, "--password", password, host)
}

// AuthFile is where `podman login` stored credentials for this podman.
func (p *Podman) AuthFile() string { return filepath.Join(p.RunRoot, "containers", "auth.json") }

// DockerCertsDir is where dockerd reads a registry's (or mirror's) CA and
// client certificate: /etc/docker/certs.d/<host:port>. The daemon has no
// flag for another place, so tests write there; the port is unique.
const DockerCertsDir = "/etc/docker/certs.d"

// WriteDockerCerts writes ca.crt and, if certPEM is not empty,
// client.cert and client.key for hostPort ("[::1]:5000") into
// DockerCertsDir, and removes the directory in t.Cleanup. It needs root.
func WriteDockerCerts(t testing.TB, hostPort string, caPEM, certPEM, keyPEM []byte) string {
	t.Helper()
	RequireRoot(t, "writing "+DockerCertsDir)
	dir := filepath.Join(DockerCertsDir, hostPort)
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("%s exists already: not ours to overwrite", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	write := func(name string, data []byte, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.crt", caPEM, 0o644)
	if len(certPEM) > 0 {
		write("client.cert", certPEM, 0o644)
		write("client.key", keyPEM, 0o600)
	}
	return dir
}
