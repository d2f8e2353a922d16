package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/internal/testupstream"
)

func TestServeTLS(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/alpine", "latest", 2, 4096)
	ca := newTestCA(t)
	srv := ca.server(t)
	m := startMirror(t, up, func(c *config) {
		c.Server.TLSCertFile, c.Server.TLSKeyFile = srv.CertFile, srv.KeyFile
	})
	ref, err := name.ParseReference(m.host + "/library/alpine:latest")
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}
	got, err := remote.Image(ref, remote.WithTransport(tr))
	if err != nil {
		t.Fatalf("pull over TLS: %v", err)
	}
	readImage(t, got)
	if d, _ := got.Digest(); d.String() != testupstream.Digest(t, img).String() {
		t.Fatalf("digest %s", d)
	}
	if _, err := http.Get("http://" + m.host + "/v2/"); err == nil {
		t.Error("plain HTTP answered on a TLS listener")
	}
}

func TestTLSConfigNeedsBoth(t *testing.T) {
	cfg := defaultConfig()
	cfg.Server.TLSCertFile = "cert.pem"
	if err := cfg.finish(); err == nil {
		t.Fatal("a certificate without a key was accepted")
	}
	// A pair that cannot be loaded fails serve before the data dir exists.
	dataDir := filepath.Join(t.TempDir(), "data")
	out, err := runCLIErr("serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem")
	if err == nil || !strings.Contains(err.Error(), "tls_cert_file") {
		t.Fatalf("serve with a missing certificate: %v\n%s", err, out)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("serve with a missing certificate made the data dir: %v", err)
	}
}

// TestLocalCommandsReachATLSServer: commands on the box reach a server
// with TLS through its data dir, its certificate issued for its public
// name only and no CA given: they trust exactly the certificate the
// server wrote into the data dir, for management (du) and for pulls
// (preload); another certificate there is refused.
func TestLocalCommandsReachATLSServer(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/alpine", "latest", 1, 1000)
	ca := newTestCA(t)
	srv := ca.issue(t, "mirror.example", x509.ExtKeyUsageServerAuth)
	m := startMirror(t, up, func(c *config) { c.Server.TLSCertFile, c.Server.TLSKeyFile = srv.CertFile, srv.KeyFile })
	for _, args := range [][]string{{"du"}, {"preload", "alpine:latest"}} {
		cmd := append([]string{args[0], "--data-dir", m.cfg.DataDir, "--log-level", "warn"}, args[1:]...)
		if out, err := runCLIErr(cmd...); err != nil {
			t.Fatalf("%s through the TLS server: %v\n%s", args[0], err, out)
		}
	}
	other := ca.issue(t, "mirror.example", x509.ExtKeyUsageServerAuth)
	pemBytes, err := os.ReadFile(other.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.cfg.DataDir, admin.ServerCertFile), pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runCLIErr("du", "--data-dir", m.cfg.DataDir, "--log-level", "warn"); err == nil {
		t.Fatalf("du trusted a certificate other than the server's:\n%s", out)
	}
}
