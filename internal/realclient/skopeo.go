package realclient

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// MirrorRule is one [[registry]] block of a containers registries.conf:
// images under Prefix (a registry such as "docker.io" or "ghcr.io", or a
// longer prefix) are pulled from Mirror first, over plain HTTP.
type MirrorRule struct {
	Prefix string // e.g. "docker.io"
	Mirror string // mirror location: "127.0.0.1:5000", or with a path "127.0.0.1:5000/ghcr.io"
	// Blocked makes the source registry itself unreachable (blocked = true),
	// so a mirror failure cannot fall back to it.
	Blocked bool
}

// Mirror is a rule sending every pull of registry to mirrorHost
// ("127.0.0.1:5000", or "127.0.0.1:5000/<registry>" for a mirror that
// takes the registry as a path prefix).
func Mirror(registry, mirrorHost string) MirrorRule {
	return MirrorRule{Prefix: registry, Mirror: mirrorHost}
}

// PathPrefixMirror is a rule sending pulls of registry to
// mirrorHost/registry: requests then look like
// /v2/<registry>/<repo>/manifests/<ref> at the mirror.
func PathPrefixMirror(registry, mirrorHost string) MirrorRule {
	return MirrorRule{Prefix: registry, Mirror: strings.TrimSuffix(mirrorHost, "/") + "/" + registry}
}

// WriteRegistriesConf writes a registries.conf (v2 format) with the rules,
// docker.io as the only search registry and permissive short names, and
// returns its path. It is valid for skopeo, podman and buildah.
func WriteRegistriesConf(t testing.TB, rules ...MirrorRule) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("unqualified-search-registries = [\"docker.io\"]\nshort-name-mode = \"permissive\"\n")
	for _, r := range rules {
		fmt.Fprintf(&b, "\n[[registry]]\nprefix = %s\nlocation = %s\n", strconv.Quote(r.Prefix), strconv.Quote(r.Prefix))
		if r.Blocked {
			b.WriteString("blocked = true\n")
		}
		fmt.Fprintf(&b, "\n[[registry.mirror]]\nlocation = %s\ninsecure = true\n", strconv.Quote(r.Mirror))
	}
	path := filepath.Join(t.TempDir(), "registries.conf")
	writeFile(t, path, b.String())
	return path
}

// writePolicy writes a signature policy accepting anything (the host's
// /etc/containers/policy.json may be missing or stricter).
func writePolicy(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.json")
	writeFile(t, path, `{"default":[{"type":"insecureAcceptAnything"}]}`+"\n")
	return path
}

// skopeoArgs are the global options for every skopeo command.
func skopeoArgs(t testing.TB, registriesConf string) []string {
	t.Helper()
	return []string{
		"--registries-conf", registriesConf,
		"--policy", writePolicy(t),
		"--tmpdir", t.TempDir(),
		"--command-timeout", CommandTimeout.String(),
	}
}

func skopeoEnv(t testing.TB) []string {
	t.Helper()
	home := t.TempDir() // no ~/.docker/config.json or auth.json from the host
	return cleanEnv("HOME="+home, "XDG_RUNTIME_DIR="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
}

// SkopeoCopy copies srcRef (e.g. "docker.io/library/alpine:latest") with
// all its platforms into the OCI layout destDir, pulling through the mirror
// at mirrorHost ("127.0.0.1:5000", or "127.0.0.1:5000/ghcr.io" for a
// path-prefix mirror), and returns the digest of the top-level manifest or
// index as served (digests are preserved, no conversion to OCI).
func SkopeoCopy(t testing.TB, mirrorHost, srcRef, destDir string) string {
	t.Helper()
	conf := WriteRegistriesConf(t, Mirror(registryOf(srcRef), mirrorHost))
	return SkopeoCopyWithConf(t, conf, srcRef, destDir)
}

// SkopeoCopyWithConf is SkopeoCopy with a registries.conf of the caller's.
func SkopeoCopyWithConf(t testing.TB, registriesConf, srcRef, destDir string) string {
	t.Helper()
	if _, err := SkopeoCopyErr(t, registriesConf, srcRef, destDir); err != nil {
		t.Fatal(err)
	}
	return OCILayoutDigest(t, destDir)
}

// SkopeoCopyErr runs the copy and returns its output and error instead of
// failing the test (for tests that expect the pull to fail).
func SkopeoCopyErr(t testing.TB, registriesConf, srcRef, destDir string) (string, error) {
	t.Helper()
	bin := Require(t, "skopeo")
	args := append(skopeoArgs(t, registriesConf),
		"copy", "--all", "--preserve-digests", "--retry-times", "0", "--src-no-creds",
		"docker://"+strings.TrimPrefix(srcRef, "docker://"), "oci:"+destDir)
	return run(skopeoEnv(t), bin, args...)
}

// OCILayoutDigest returns the digest of the single top-level manifest or
// index recorded in an OCI layout's index.json.
func OCILayoutDigest(t testing.TB, dir string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatalf("OCI layout: %v", err)
	}
	var idx struct {
		Manifests []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatalf("OCI layout %s/index.json: %v\n%s", dir, err, data)
	}
	if len(idx.Manifests) != 1 {
		t.Fatalf("OCI layout %s/index.json: want 1 manifest, got %d:\n%s", dir, len(idx.Manifests), data)
	}
	return idx.Manifests[0].Digest
}

// SkopeoInspectDigest returns the manifest digest of ref as served through
// the mirror at mirrorHost (`skopeo inspect --format '{{.Digest}}'`; tags
// are not listed, since tag listing never goes through a mirror).
func SkopeoInspectDigest(t testing.TB, mirrorHost, ref string) string {
	t.Helper()
	conf := WriteRegistriesConf(t, Mirror(registryOf(ref), mirrorHost))
	return SkopeoInspectDigestWithConf(t, conf, ref)
}

// SkopeoInspectDigestWithConf is SkopeoInspectDigest with a registries.conf
// of the caller's.
func SkopeoInspectDigestWithConf(t testing.TB, registriesConf, ref string) string {
	t.Helper()
	bin := Require(t, "skopeo")
	args := append(skopeoArgs(t, registriesConf),
		"inspect", "--no-tags", "--no-creds", "--retry-times", "0", "--format", "{{.Digest}}",
		"docker://"+strings.TrimPrefix(ref, "docker://"))
	out := strings.TrimSpace(mustRun(t, skopeoEnv(t), bin, args...))
	if !strings.HasPrefix(out, "sha256:") || strings.Contains(out, "\n") {
		t.Fatalf("skopeo inspect %s: unexpected output %q", ref, out)
	}
	return out
}
