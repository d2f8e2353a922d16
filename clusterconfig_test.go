package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regmirror/regmirror/cluster"
	"github.com/regmirror/regmirror/proxy"
)

// TestClusterConfig: [cluster] is checked at load: self (or
// REGMIRROR_CLUSTER_SELF), peers and a secret file of at least 16 bytes
// are required, URLs must be http(s)://host[:port]; without the section
// the node is on its own.
func TestClusterConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	short := filepath.Join(dir, "short")
	os.WriteFile(good, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	os.WriteFile(short, []byte("too short\n"), 0o600)
	write := func(body string) string {
		p := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := "data_dir = " + `"` + dir + `"` + "\n"
	cfg, err := loadWith(t, "--config", write(base))
	if err != nil || cfg.Cluster != nil {
		t.Fatalf("no section: %v, cluster %v", err, cfg.Cluster)
	}
	cases := []struct {
		name, body, env, wantErr string
	}{
		{"ok", `self = "http://10.0.0.1:5000"` + "\npeers = [\"http://10.0.0.2:5000\"]\nsecret_file = \"" + good + "\"", "", ""},
		{"self from env", "peers = [\"http://10.0.0.2:5000\"]\nsecret_file = \"" + good + "\"", "http://pod-1.peers:5000", ""},
		{"no self", "peers = [\"http://10.0.0.2:5000\"]\nsecret_file = \"" + good + "\"", "", "cluster.self"},
		{"no peers", `self = "http://10.0.0.1:5000"` + "\nsecret_file = \"" + good + "\"", "", "cluster.peers"},
		{"no secret", `self = "http://10.0.0.1:5000"` + "\npeers = [\"http://10.0.0.2:5000\"]", "", "cluster.secret_file"},
		{"short secret", `self = "http://10.0.0.1:5000"` + "\npeers = [\"http://10.0.0.2:5000\"]\nsecret_file = \"" + short + "\"", "", "at least 16 bytes"},
		{"missing secret file", `self = "http://10.0.0.1:5000"` + "\npeers = [\"http://10.0.0.2:5000\"]\nsecret_file = \"/nonexistent\"", "", "cluster.secret_file"},
		{"missing ca_file", `self = "https://10.0.0.1:5000"` + "\npeers = [\"https://10.0.0.2:5000\"]\nsecret_file = \"" + good + "\"\nca_file = \"/nonexistent.pem\"", "", "CA file"},
		{"bad peer URL", `self = "http://10.0.0.1:5000"` + "\npeers = [\"10.0.0.2:5000\"]\nsecret_file = \"" + good + "\"", "", "peer"},
		{"unknown key", `self = "http://10.0.0.1:5000"` + "\npeers = [\"http://10.0.0.2:5000\"]\nsecret_file = \"" + good + "\"\nping = \"1s\"", "", "unknown keys"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(clusterSelfEnv, tc.env)
			cfg, err := loadWith(t, "--config", write(base+"[cluster]\n"+tc.body+"\n"))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tc.env != "" && cfg.Cluster.Self != tc.env {
					t.Fatalf("self %q, want %q from the environment", cfg.Cluster.Self, tc.env)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error about %s", err, tc.wantErr)
			}
		})
	}
}

// TestPeerHeadersAgree: the header an owner marks an upstream failure with
// (proxy) is the one the asking node reads (cluster).
func TestPeerHeadersAgree(t *testing.T) {
	if proxy.PeerUpstreamFailedHeader != cluster.UpstreamFailedHeader {
		t.Errorf("proxy sets %q, cluster reads %q", proxy.PeerUpstreamFailedHeader, cluster.UpstreamFailedHeader)
	}
}
