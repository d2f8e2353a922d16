package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestLocalCommandsReachATLSServer: a server with TLS, its certificate
// issued for its public name only and kept with its key in one file, no
// CA given. Commands on the box reach it through its data dir, for
// management (du) and for pulls (preload), trusting exactly the
// certificate the server wrote there, which holds no key; another
// certificate there is refused. The server's own pulls through itself
// (the watch list) and the mirror a command starts on a free data dir
// (preload) trust it the same way.
func TestLocalCommandsReachATLSServer(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/alpine", "latest", 1, 1000)
	up.PushRandomImage(t, "library/watched", "latest", 1, 1000)
	ca := newTestCA(t)
	srv := ca.issue(t, "mirror.example", x509.ExtKeyUsageServerAuth)
	combined := filepath.Join(t.TempDir(), "server.pem")
	var pair []byte
	for _, f := range []string{srv.CertFile, srv.KeyFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pair = append(pair, b...)
	}
	writeTestFile(t, combined, pair)
	m := startMirror(t, up, func(c *config) {
		c.Server.TLSCertFile, c.Server.TLSKeyFile = combined, combined
		c.Watch = []watchConfig{{Images: []string{"docker.io/library/watched:latest"}, Interval: duration{24 * time.Hour}}}
	})
	<-m.app.watch.RunNow(context.Background())
	if st := m.app.watchStatus(); len(st) != 1 || st[0].Result == "failed" {
		t.Fatalf("the watch list through the TLS server: %+v", st)
	}
	written, err := os.ReadFile(filepath.Join(m.cfg.DataDir, admin.ServerCertFile))
	if err != nil || !strings.Contains(string(written), "CERTIFICATE") || strings.Contains(string(written), "PRIVATE KEY") {
		t.Fatalf("%s: %v, want the certificate without the key:\n%s", admin.ServerCertFile, err, written)
	}
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

	// The data dir free: preload starts a mirror with the config's TLS.
	m.stop()
	conf := filepath.Join(t.TempDir(), "regmirror.toml")
	writeTestFile(t, conf, []byte(fmt.Sprintf("data_dir = %q\nlog_level = \"warn\"\n[server]\ntls_cert_file = %q\ntls_key_file = %q\n[[registry]]\nname = \"docker.io\"\nurl = %q\n",
		m.cfg.DataDir, combined, combined, up.URL())))
	if out, err := runCLIErr("preload", "--config", conf, "watched:latest"); err != nil {
		t.Fatalf("preload on a free data dir with TLS configured: %v\n%s", err, out)
	}
}
