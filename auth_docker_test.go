package main

import (
	"crypto/tls"
	"encoding/base64"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regmirror/regmirror/internal/realclient"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// startCertMirror runs an HTTPS mirror on listen whose users are client
// certificate CNs signed by ca: "node1" may pull docker.io/library/**.
func startCertMirror(t *testing.T, up *testupstream.Server, ca *testCA, listen string) *mirror {
	t.Helper()
	srv := ca.server(t)
	m := startMirror(t, up, func(c *config) {
		c.Listen = listen
		c.Server.TLSCertFile, c.Server.TLSKeyFile = srv.CertFile, srv.KeyFile
		c.Auth = &authConfig{
			ClientCAFile: ca.File,
			Rules:        []authRule{{Users: []string{"node1"}, Allow: []string{"docker.io/library/**"}}},
		}
	})
	m.url = "https://" + m.host
	return m
}

// TestAuthClientCertificate: over TLS with a client CA, a verified
// certificate's CN is the user; no certificate is 401; a certificate from
// another CA does not get past the handshake; a CN without a rule is 403.
func TestAuthClientCertificate(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/alpine", "latest", 1, 1024)
	ca := newTestCA(t)
	m := startCertMirror(t, up, ca, "127.0.0.1:0")
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, Certificates: certs}}}
	}
	status := func(c *http.Client, path string) int {
		t.Helper()
		resp, err := c.Get(m.url + path)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	node1 := client(ca.client(t, "node1").TLS(t))
	if got := status(node1, "/v2/"); got != http.StatusOK {
		t.Fatalf("/v2/ with node1's certificate: %d", got)
	}
	if got := status(node1, "/v2/library/alpine/manifests/latest"); got != http.StatusOK {
		t.Fatalf("pull with node1's certificate: %d", got)
	}
	if got := status(client(), "/v2/library/alpine/manifests/latest"); got != http.StatusUnauthorized {
		t.Fatalf("pull without a certificate: %d, want 401", got)
	}
	if got := status(client(ca.client(t, "node2").TLS(t)), "/v2/library/alpine/manifests/latest"); got != http.StatusForbidden {
		t.Fatalf("pull by a CN no rule names: %d, want 403", got)
	}
	other := newTestCA(t)
	if got := status(client(other.client(t, "node1").TLS(t)), "/v2/library/alpine/manifests/latest"); got == http.StatusOK {
		t.Fatal("a certificate from another CA was accepted")
	}
}

// TestDockerdClientCertificate: dockerd pulls through an HTTPS mirror with
// the test CA and a client certificate in certs.d/<host:port>/. Without
// the certificate the pull fails and nothing is fetched upstream.
//
// The mirror listens on [::1]: dockerd treats every 127.0.0.0/8 registry
// as insecure (always, whatever the configuration), and for an insecure
// one it neither verifies TLS nor reads certs.d, so it would never send
// its client certificate there.
func TestDockerdClientCertificate(t *testing.T) {
	realclient.RequireRoot(t, "dockerd")
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Fatalf("no IPv6 loopback for the mirror: %v", err)
	} else {
		ln.Close()
	}
	up := testupstream.Start(t)
	alpine := up.PushRandomImage(t, "library/alpine", "latest", 2, 32<<10)
	up.PushRandomImage(t, "library/busybox", "latest", 1, 8<<10)
	ca := newTestCA(t)
	m := startCertMirror(t, up, ca, "[::1]:0")
	cert := ca.client(t, "node1")
	dir := realclient.WriteDockerCerts(t, m.host, ca.CertPEM, cert.CertPEM, cert.KeyPEM)

	d := realclient.StartDockerd(t, m.url)
	d.Pull(t, "alpine")
	if got, want := d.RepoDigest(t, "alpine"), testupstream.Digest(t, alpine).String(); got != want {
		t.Fatalf("docker pull alpine: %s, want %s", got, want)
	}

	// dockerd reads certs.d at each pull: take the certificate away.
	for _, f := range []string{"client.cert", "client.key"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	before := up.Requests()
	if out, err := d.PullErr("busybox"); err == nil {
		t.Fatalf("docker pull without a client certificate succeeded:\n%s", out)
	}
	if got := up.Requests(); got != before {
		t.Fatalf("upstream was asked %d times for a client without a certificate", got-before)
	}
}

// TestDockerdTrustedNetwork: a mirror trusting 127.0.0.1/32 serves dockerd
// (whose connections to loopback come from 127.0.0.1) as "anonymous"
// without a certificate or login, while a client from 127.0.0.2 is not
// trusted (401). dockerd's forwarded Docker Hub login does not matter.
func TestDockerdTrustedNetwork(t *testing.T) {
	realclient.RequireRoot(t, "dockerd")
	up := testupstream.Start(t)
	alpine := up.PushRandomImage(t, "library/alpine", "latest", 2, 32<<10)
	m := startMirror(t, up, func(c *config) {
		c.Auth = &authConfig{
			TrustedNetworks: []string{"127.0.0.1/32"},
			Rules:           []authRule{{Users: []string{"anonymous"}, Allow: []string{"docker.io/library/**"}}},
		}
	})
	from := func(src string) *http.Client {
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
		return &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	}
	check := func(src string, want int) {
		t.Helper()
		resp, err := from(src).Get(m.url + "/v2/library/alpine/tags/list")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("client from %s: %d, want %d", src, resp.StatusCode, want)
		}
	}
	check("127.0.0.2", http.StatusUnauthorized)

	d := realclient.StartDockerd(t, m.url)
	d.Pull(t, "alpine")
	if got, want := d.RepoDigest(t, "alpine"), testupstream.Digest(t, alpine).String(); got != want {
		t.Fatalf("docker pull alpine: %s, want %s", got, want)
	}
	check("127.0.0.1", http.StatusOK)
	check("127.0.0.2", http.StatusUnauthorized)
	// A Docker Hub login that dockerd forwards is no mirror login: the
	// trusted client stays anonymous and is not refused for it.
	req, _ := http.NewRequest(http.MethodGet, m.url+"/v2/library/alpine/tags/list", nil)
	req.SetBasicAuth("hubuser", "hub-password")
	resp, err := from("127.0.0.1").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a trusted client with a Hub login: %d, want 200", resp.StatusCode)
	}
	if up.SawAuthorization("hub-password") || up.SawAuthorization(base64.StdEncoding.EncodeToString([]byte("hubuser:hub-password"))) {
		t.Fatal("the client's Hub login went upstream")
	}
	if strings.Contains(m.host, "127.0.0.2") {
		t.Fatal("the mirror must not listen on the untrusted address")
	}
}

// TestRemoteAdminCLI: `regmirror du --server https://... --username
// --password-file` (or a client certificate) manages a server with access
// control as one of its admins; anyone else is refused.
func TestRemoteAdminCLI(t *testing.T) {
	up := testupstream.Start(t)
	ca := newTestCA(t)
	srv := ca.server(t)
	m := startMirror(t, up, func(c *config) {
		c.Server.TLSCertFile, c.Server.TLSKeyFile = srv.CertFile, srv.KeyFile
		c.Auth = &authConfig{
			HtpasswdFile: writeHtpasswd(t, "alice", "alice-pw", "bob", "bob-pw"),
			ClientCAFile: ca.File,
			Admins:       []string{"alice", "ops-node"},
			Rules:        []authRule{{Users: []string{"*"}, Allow: []string{"**"}}},
		}
	})
	server := "https://" + m.host
	pwFile := func(pw string) string {
		p := filepath.Join(t.TempDir(), "pw")
		writeTestFile(t, p, []byte(pw+"\n"))
		return p
	}
	run := func(args ...string) (string, error) {
		var out, errOut strings.Builder
		err := newCLI(&out, &errOut).Run(append([]string{"regmirror", "du", "--data-dir", t.TempDir()}, args...))
		return out.String() + errOut.String(), err
	}
	if out, err := run("--server", server, "--username", "alice", "--password-file", pwFile("alice-pw"), "--ca-file", ca.File); err != nil || !strings.Contains(out, "data dir:") {
		t.Fatalf("admin with a password: %v\n%s", err, out)
	}
	node := ca.client(t, "ops-node")
	if out, err := run("--server", server, "--client-cert", node.CertFile, "--client-key", node.KeyFile, "--ca-file", ca.File); err != nil || !strings.Contains(out, "data dir:") {
		t.Fatalf("admin with a certificate: %v\n%s", err, out)
	}
	if out, err := run("--server", server, "--username", "bob", "--password-file", pwFile("bob-pw"), "--ca-file", ca.File); err == nil {
		t.Fatalf("a user who is not an admin managed the mirror:\n%s", out)
	}
	if out, err := run("--server", server, "--username", "alice", "--password-file", pwFile("wrong"), "--ca-file", ca.File); err == nil {
		t.Fatalf("a wrong password managed the mirror:\n%s", out)
	}
	if _, err := run("--server", "http://"+m.host, "--username", "alice", "--password-file", pwFile("alice-pw")); err == nil || !strings.Contains(err.Error(), "https://") {
		t.Fatalf("a password over plain HTTP: %v", err)
	}
	// The other commands that work through a server take the same flags.
	var out, errOut strings.Builder
	err := newCLI(&out, &errOut).Run([]string{"regmirror", "verify", "--data-dir", t.TempDir(), "--server", server,
		"--username", "alice", "--password-file", pwFile("alice-pw"), "--ca-file", ca.File})
	if err != nil || !strings.Contains(out.String(), "verified 0 blobs") || !strings.Contains(out.String(), server) {
		t.Fatalf("verify as a remote admin: %v\n%s%s", err, &out, &errOut)
	}
	// preload pulls through the remote server over its TLS, as the admin,
	// and pins there.
	up.PushRandomOCIImage(t, "library/remote", "v1", 2, 32<<10)
	out.Reset()
	errOut.Reset()
	err = newCLI(&out, &errOut).Run([]string{"regmirror", "preload", "--data-dir", t.TempDir(), "--server", server,
		"--client-cert", node.CertFile, "--client-key", node.KeyFile, "--ca-file", ca.File, "remote:v1"})
	if err != nil {
		t.Fatalf("preload as a remote admin: %v\n%s%s", err, &out, &errOut)
	}
	if n := up.Count(http.MethodGet, "/v2/library/remote/manifests/v1"); n != 1 {
		t.Errorf("preload through the remote server: %d upstream manifest GETs, want 1", n)
	}
	if out, err := run("--server", server, "--username", "alice", "--password-file", pwFile("alice-pw"), "--ca-file", ca.File); err != nil || !strings.Contains(out, "(1 pins)") {
		t.Errorf("the remote preload is not pinned on the server: %v\n%s", err, out)
	}
}
