package realclient

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRegistryOfAndRepoOf(t *testing.T) {
	for _, c := range []struct{ ref, reg, repo string }{
		{"alpine", "docker.io", "docker.io/library/alpine"},
		{"alpine:3.20", "docker.io", "docker.io/library/alpine"},
		{"library/alpine@sha256:abc", "docker.io", "docker.io/library/alpine"},
		{"docker.io/library/alpine:latest", "docker.io", "docker.io/library/alpine"},
		{"docker.io/alpine", "docker.io", "docker.io/library/alpine"},
		{"index.docker.io/library/alpine", "docker.io", "docker.io/library/alpine"},
		{"bitnami/redis:7", "docker.io", "docker.io/bitnami/redis"},
		{"ghcr.io/org/app:v1", "ghcr.io", "ghcr.io/org/app"},
		{"127.0.0.1:5000/a/b", "127.0.0.1:5000", "127.0.0.1:5000/a/b"},
		{"localhost/x:1", "localhost", "localhost/x"},
		{"registry-1.docker.io/alpine", "docker.io", "docker.io/library/alpine"},
		{"registry.hub.docker.com/org/app:1", "docker.io", "docker.io/org/app"},
	} {
		if got := registryOf(c.ref); got != c.reg {
			t.Errorf("registryOf(%q) = %q, want %q", c.ref, got, c.reg)
		}
		if got := repoOf(c.ref); got != c.repo {
			t.Errorf("repoOf(%q) = %q, want %q", c.ref, got, c.repo)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	if got := unescapeMountinfo(`/tmp/a\040b\011c\\`); got != "/tmp/a b\tc\\\\" {
		t.Errorf("got %q", got)
	}
}

func TestRequireSkipsOrFails(t *testing.T) {
	if required() {
		t.Skip("REGMIRROR_REQUIRE_CLIENTS=1: Require would fail, not skip")
	}
	var skipped bool
	done := make(chan struct{})
	ft := &fakeTB{TB: t}
	go func() {
		defer close(done)
		defer func() { skipped = ft.skipped }()
		Require(ft, "no-such-client-binary-xyz")
	}()
	<-done
	if !skipped || !strings.Contains(ft.msg, "apt-get install no-such-client-binary-xyz") {
		t.Errorf("skipped=%v msg=%q", skipped, ft.msg)
	}
}

// fakeTB records Skipf/Fatalf and stops the goroutine like testing does.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skipped, f.msg = true, sprintf(format, args...)
	runtimeGoexit()
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, sprintf(format, args...)
	runtimeGoexit()
}

// TestDocker pulls docker.io/library/alpine:latest by its short name
// through a private dockerd whose --registry-mirror is a local registry.
func TestDocker(t *testing.T) {
	reg := newTestRegistry(t)
	img := reg.pushImage(t, "library/alpine:latest")
	want := digestOf(t, img)
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	d := StartDockerd(t, reg.URL)
	t.Logf("dockerd start: %v", time.Since(start))

	start = time.Now()
	d.Pull(t, "alpine")
	t.Logf("docker pull: %v", time.Since(start))
	if got := d.RepoDigest(t, "alpine"); got != want {
		t.Errorf("RepoDigest = %s, want %s (RepoDigests %v)", got, want, d.RepoDigests(t, "alpine"))
	}
	if got := d.ImageID(t, "docker.io/library/alpine:latest"); got != cfg.String() {
		t.Errorf("ImageID = %s, want config digest %s", got, cfg)
	}
	if len(reg.requests("/v2/library/alpine/blobs/")) == 0 {
		t.Errorf("the mirror served no blob; requests: %v", reg.requests(""))
	}

	d.Remove(t, "alpine")
	if d.HasImage("alpine") {
		t.Fatal("image still present after Remove")
	}
	// By digest, with the long name.
	d.Pull(t, "docker.io/library/alpine@"+want)
	if got := d.RepoDigest(t, "docker.io/library/alpine@"+want); got != want {
		t.Errorf("RepoDigest after pull by digest = %s, want %s", got, want)
	}
	// A name the mirror does not have fails (docker then tries docker.io,
	// unreachable here).
	if out, err := d.PullErr("docker.io/library/nothere:1"); err == nil {
		t.Errorf("pull of a missing image succeeded:\n%s", out)
	}
}

func TestSkopeo(t *testing.T) {
	reg := newTestRegistry(t)
	want := digestOf(t, reg.pushImage(t, "library/alpine:latest"))

	start := time.Now()
	if got := SkopeoCopy(t, reg.Host, "docker.io/library/alpine:latest", filepath.Join(t.TempDir(), "oci")); got != want {
		t.Errorf("SkopeoCopy digest = %s, want %s", got, want)
	}
	t.Logf("skopeo copy: %v", time.Since(start))
	if got := SkopeoInspectDigest(t, reg.Host, "docker.io/library/alpine:latest"); got != want {
		t.Errorf("SkopeoInspectDigest = %s, want %s", got, want)
	}

	t.Run("index", func(t *testing.T) {
		want := digestOf(t, reg.pushIndex(t, "library/multi:1"))
		if got := SkopeoCopy(t, reg.Host, "docker.io/library/multi:1", filepath.Join(t.TempDir(), "oci")); got != want {
			t.Errorf("SkopeoCopy(index) = %s, want %s", got, want)
		}
	})

	t.Run("path-prefix mirror", func(t *testing.T) {
		want := digestOf(t, reg.pushImage(t, "ghcr.io/org/app:v1"))
		if got := SkopeoCopy(t, reg.Host+"/ghcr.io", "ghcr.io/org/app:v1", filepath.Join(t.TempDir(), "oci")); got != want {
			t.Errorf("SkopeoCopy via path prefix = %s, want %s", got, want)
		}
		conf := WriteRegistriesConf(t, PathPrefixMirror("ghcr.io", reg.Host))
		if got := SkopeoInspectDigestWithConf(t, conf, "ghcr.io/org/app:v1"); got != want {
			t.Errorf("SkopeoInspectDigest via path prefix = %s, want %s", got, want)
		}
		if len(reg.requests("GET /v2/ghcr.io/org/app/blobs/")) == 0 {
			t.Errorf("no blob fetched under /v2/ghcr.io/; requests: %v", reg.requests(""))
		}
	})
}

func TestContainerd(t *testing.T) {
	reg := newTestRegistry(t)
	want := digestOf(t, reg.pushImage(t, "library/alpine:latest"))

	start := time.Now()
	c := StartContainerd(t)
	t.Logf("containerd start: %v", time.Since(start))

	start = time.Now()
	if got := c.PullWithHostsDir(t, "docker.io/library/alpine:latest", WriteHostsDir(t, reg.URL)); got != want {
		t.Errorf("ctr pull digest = %s, want %s", got, want)
	}
	t.Logf("ctr pull: %v", time.Since(start))
	if len(reg.requests("ns=docker.io")) == 0 {
		t.Errorf("no request carried ?ns=docker.io: %v", reg.requests(""))
	}

	t.Run("override_path", func(t *testing.T) {
		want := digestOf(t, reg.pushImage(t, "ghcr.io/org/app:v1"))
		hosts := t.TempDir()
		WriteHostsFile(t, hosts, HostsConfig{Registry: "ghcr.io", Mirror: reg.URL + "/v2/ghcr.io", OverridePath: true})
		if got := c.PullWithHostsDir(t, "ghcr.io/org/app:v1", hosts); got != want {
			t.Errorf("ctr pull digest = %s, want %s", got, want)
		}
		if len(reg.requests("/v2/ghcr.io/org/app/manifests/")) == 0 {
			t.Errorf("no manifest request under /v2/ghcr.io/: %v", reg.requests(""))
		}
	})

	c.RemoveImage(t, "docker.io/library/alpine:latest")
}

func TestPodman(t *testing.T) {
	reg := newTestRegistry(t)
	want := digestOf(t, reg.pushImage(t, "library/alpine:latest"))

	start := time.Now()
	conf := WriteRegistriesConf(t, Mirror("docker.io", reg.Host))
	if got := PodmanPull(t, conf, "docker.io/library/alpine:latest"); got != want {
		t.Errorf("podman digest = %s, want %s", got, want)
	}
	t.Logf("podman pull: %v", time.Since(start))

	t.Run("path-prefix mirror, index", func(t *testing.T) {
		want := digestOf(t, reg.pushIndex(t, "ghcr.io/org/multi:v1"))
		conf := WriteRegistriesConf(t, MirrorRule{Prefix: "ghcr.io", Mirror: reg.Host + "/ghcr.io", Blocked: true})
		p := NewPodman(t)
		if got := p.Pull(t, conf, "ghcr.io/org/multi:v1"); got != want {
			t.Errorf("podman digest of an index = %s, want %s", got, want)
		}
	})
}
