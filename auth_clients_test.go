package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regmirror/regmirror/internal/realclient"
	"github.com/regmirror/regmirror/internal/testpull"
	"github.com/regmirror/regmirror/internal/testupstream"
)

const (
	deniedReason = "denied"          // regmirror_access_denied_total{reason=...}
	unauthReason = "unauthenticated" // regmirror_access_denied_total{reason=...}
)

// authMirror is a plain-HTTP mirror on 127.0.0.1 whose only way in is a
// password: user ci may pull Docker Hub except docker.io/someuser/**.
type authMirror struct {
	up     *testupstream.Server
	m      *mirror
	alpine string // digest of docker.io/library/alpine:latest
}

const ciPassword = "ci-pw-7f3a"

func startAuthMirror(t *testing.T) *authMirror {
	t.Helper()
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/alpine", "latest", 2, 32<<10)
	up.PushRandomImage(t, "someuser/app", "1", 1, 8<<10)
	m := startMirror(t, up, func(c *config) {
		c.Auth = &authConfig{
			HtpasswdFile: writeHtpasswd(t, "ci", ciPassword),
			Rules:        []authRule{{Users: []string{"ci"}, Allow: []string{"docker.io/**"}, Deny: []string{"docker.io/someuser/**"}}},
		}
	})
	return &authMirror{up: up, m: m, alpine: testupstream.Digest(t, img).String()}
}

// refusedWithout runs a pull that must fail, and checks that
// regmirror_access_denied_total{reason} grew and upstream heard nothing.
func (a *authMirror) refusedWithout(t *testing.T, reason string, pull func() (string, error)) {
	t.Helper()
	denied := func() float64 {
		v, _ := testpull.MetricSum(t, a.m.url, "regmirror_access_denied_total", "reason", reason)
		return v
	}
	before, upBefore := denied(), a.up.Requests()
	out, err := pull()
	if err == nil {
		t.Fatalf("pull succeeded:\n%s", out)
	}
	if after := denied(); after <= before {
		t.Fatalf("regmirror_access_denied_total{reason=%q} did not grow (%v → %v); client said:\n%s", reason, before, after, out)
	}
	if got := a.up.Requests(); got != upBefore {
		t.Fatalf("upstream was asked %d times on behalf of a refused client", got-upBefore)
	}
}

// TestAuthSkopeo: skopeo with --src-creds pulls from the mirror named as
// the registry (bare names: the default registry; and the path-prefix
// form); a wrong password is 401, a denied repository 403 with nothing
// fetched upstream. `skopeo login` to the mirror works, and the auth file
// it writes serves a registries.conf mirror entry (containers/image never
// sends --src-creds to a mirror).
func TestAuthSkopeo(t *testing.T) {
	realclient.Require(t, "skopeo")
	a := startAuthMirror(t)
	conf := realclient.WriteRegistriesConf(t)
	creds := func(password string) []string {
		return []string{"--src-tls-verify=false", "--src-creds", "ci:" + password}
	}
	for _, ref := range []string{a.m.host + "/library/alpine:latest", a.m.host + "/docker.io/library/alpine:latest"} {
		dir := t.TempDir()
		if _, err := realclient.SkopeoCopyAuthErr(t, conf, ref, dir, creds(ciPassword)...); err != nil {
			t.Fatal(err)
		}
		if got := realclient.OCILayoutDigest(t, dir); got != a.alpine {
			t.Fatalf("skopeo copy %s: %s, want %s", ref, got, a.alpine)
		}
	}
	t.Run("wrong password", func(t *testing.T) {
		a.refusedWithout(t, unauthReason, func() (string, error) {
			out, err := realclient.SkopeoCopyAuthErr(t, conf, a.m.host+"/library/alpine:latest", t.TempDir(), creds("wrong")...)
			if err != nil && !strings.Contains(out, "unauthorized") {
				t.Errorf("skopeo did not report 401 unauthorized:\n%s", out)
			}
			return out, err
		})
	})
	t.Run("denied repository", func(t *testing.T) {
		a.refusedWithout(t, deniedReason, func() (string, error) {
			out, err := realclient.SkopeoCopyAuthErr(t, conf, a.m.host+"/someuser/app:1", t.TempDir(), creds(ciPassword)...)
			if err != nil && !strings.Contains(out, "denied") {
				t.Errorf("skopeo did not report 403 denied:\n%s", out)
			}
			return out, err
		})
	})
	t.Run("login, then a mirror entry", func(t *testing.T) {
		authFile := filepath.Join(t.TempDir(), "auth.json")
		if out, err := realclient.SkopeoLoginErr(t, authFile, a.m.host, "ci", "wrong"); err == nil {
			t.Fatalf("login with a wrong password succeeded:\n%s", out)
		}
		if out, err := realclient.SkopeoLoginErr(t, authFile, a.m.host, "ci", ciPassword); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mirrorConf := realclient.WriteRegistriesConf(t, realclient.Mirror("docker.io", a.m.host))
		dir := t.TempDir()
		if _, err := realclient.SkopeoCopyAuthErr(t, mirrorConf, "docker.io/library/alpine:latest", dir, "--src-authfile", authFile); err != nil {
			t.Fatal(err)
		}
		if got := realclient.OCILayoutDigest(t, dir); got != a.alpine {
			t.Fatalf("skopeo copied %s, want %s", got, a.alpine)
		}
	})
}

// TestAuthPodman: `podman login` to the mirror, then pulls through a
// registries.conf mirror entry; a stored wrong password is 401, a denied
// repository 403 with nothing fetched upstream.
func TestAuthPodman(t *testing.T) {
	realclient.RequireRoot(t, "podman")
	realclient.Require(t, "podman")
	a := startAuthMirror(t)
	conf := realclient.WriteRegistriesConf(t, realclient.Mirror("docker.io", a.m.host))
	p := realclient.NewPodman(t)
	if out, err := p.LoginErr(a.m.host, "ci", "wrong"); err == nil {
		t.Fatalf("podman login with a wrong password succeeded:\n%s", out)
	}
	if out, err := p.LoginErr(a.m.host, "ci", ciPassword); err != nil {
		t.Fatalf("podman login: %v\n%s", err, out)
	}
	if got := p.Pull(t, conf, "docker.io/library/alpine:latest"); got != a.alpine {
		t.Fatalf("podman pulled %s, want %s", got, a.alpine)
	}
	t.Run("denied repository", func(t *testing.T) {
		a.refusedWithout(t, deniedReason, func() (string, error) { return p.PullErr(conf, "docker.io/someuser/app:1") })
	})
	t.Run("wrong password", func(t *testing.T) {
		p2 := realclient.NewPodman(t)
		writeAuthJSON(t, p2.AuthFile(), a.m.host, "ci", "wrong")
		a.refusedWithout(t, unauthReason, func() (string, error) { return p2.PullErr(conf, "docker.io/library/alpine:latest") })
	})
}

// writeAuthJSON writes a containers auth.json holding user:password for host.
func writeAuthJSON(t *testing.T, path, host, user, password string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password))}}})
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAuthContainerd: ctr through a hosts.toml whose mirror entry carries
// an Authorization header.
func TestAuthContainerd(t *testing.T) {
	realclient.RequireRoot(t, "containerd")
	a := startAuthMirror(t)
	c := realclient.StartContainerd(t)
	hosts := func(password string) string {
		dir := t.TempDir()
		realclient.WriteHostsFile(t, dir, realclient.HostsConfig{Registry: "_default", Mirror: "http://" + a.m.host,
			Header: map[string]string{"Authorization": basicAuth("ci", password)}})
		return dir
	}
	good := hosts(ciPassword)
	if got := c.PullWithHostsDir(t, "docker.io/library/alpine:latest", good); got != a.alpine {
		t.Fatalf("ctr pulled %s, want %s", got, a.alpine)
	}
	t.Run("wrong password", func(t *testing.T) {
		c.RemoveImage(t, "docker.io/library/alpine:latest")
		bad := hosts("wrong")
		a.refusedWithout(t, unauthReason, func() (string, error) { return c.PullWithHostsDirErr("docker.io/library/alpine:latest", bad) })
	})
	t.Run("denied repository", func(t *testing.T) {
		a.refusedWithout(t, deniedReason, func() (string, error) { return c.PullWithHostsDirErr("docker.io/someuser/app:1", good) })
	})
}
