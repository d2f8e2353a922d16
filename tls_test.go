package main

import (
	"crypto/tls"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

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
}
