package upstream

import (
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// TestDockerHubAliases: a registry configured under any of Docker Hub's
// names is Docker Hub: library/ defaulting, registry-1.docker.io as the
// default URL, and Docker Hub's credentials from the keychain. Before,
// registry.hub.docker.com was none of these (the proxy already mapped it).
func TestDockerHubAliases(t *testing.T) {
	for _, name := range []string{"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"} {
		r, err := New(Options{Name: name, Keychain: authn.DefaultKeychain})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Repository("alpine"); got != "library/alpine" {
			t.Errorf("%s: Repository(alpine) = %q, want library/alpine", name, got)
		}
		if r.reg.RegistryStr() != "registry-1.docker.io" || r.scheme != "https" {
			t.Errorf("%s: default URL %s://%s, want https://registry-1.docker.io", name, r.scheme, r.reg.RegistryStr())
		}
		ka, ok := r.auth.(*keychainAuth)
		if !ok || ka.target.RegistryStr() != "index.docker.io" {
			t.Errorf("%s: keychain asked for %v, want index.docker.io (Docker Hub's key)", name, r.auth)
		}
	}
	r, err := New(Options{Name: "hub.docker.com"})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Repository("alpine"); got != "alpine" {
		t.Errorf("hub.docker.com is not an alias, yet Repository(alpine) = %q", got)
	}
}

// TestWithDefaults: New's first step fills exactly the documented defaults.
func TestWithDefaults(t *testing.T) {
	o, retries := withDefaults(Options{Name: "ghcr.io"}, false)
	if o.URL != "https://ghcr.io" || o.DialTimeout != DefaultDialTimeout || o.ResponseHeaderTimeout != DefaultResponseTimeout ||
		o.StallTimeout != DefaultStallTimeout || o.RetryBackoff != DefaultRetryBackoff ||
		o.MaxManifestSize != DefaultMaxManifestSize || o.Now == nil || retries != DefaultRetries {
		t.Fatalf("defaults: %+v, retries %d", o, retries)
	}
	if o, _ := withDefaults(Options{Name: "docker.io"}, true); o.URL != DefaultDockerHubURL {
		t.Fatalf("Docker Hub URL: %s", o.URL)
	}
	if _, retries := withDefaults(Options{Name: "x", Retries: -1}, false); retries != 0 {
		t.Fatalf("Retries -1: %d retries, want none", retries)
	}
	o, retries = withDefaults(Options{Name: "x", URL: "http://h:1", Retries: 5, StallTimeout: time.Second}, false)
	if o.URL != "http://h:1" || retries != 5 || o.StallTimeout != time.Second {
		t.Fatalf("set fields overridden: %+v, retries %d", o, retries)
	}
}
