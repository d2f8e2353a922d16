package upstream

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/regmirror/regmirror/internal/testupstream"
)

// TestConfigKeychain: credentials for a private upstream come from a Docker
// config.json, from its "auths" entry or from a credential helper it names.
func TestConfigKeychain(t *testing.T) {
	up := testupstream.Start(t, testupstream.WithCredentials("alice", "s3cret"))
	img := up.PushRandomImage(t, "team/app", "v1", 1, 512)
	want := testupstream.Digest(t, img)
	const regName = "registry.corp:5000"

	dir := t.TempDir()
	write := func(file, content string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	head := func(path string) error {
		t.Helper()
		r := newReg(t, up, Options{Name: regName, Keychain: NewConfigKeychain(path), Retries: -1})
		desc, err := r.HeadManifest(context.Background(), "team/app", "v1")
		if err == nil && desc.Digest != want {
			t.Fatalf("digest %s, want %s", desc.Digest, want)
		}
		return err
	}
	auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	if err := head(write("auths.json", `{"auths":{"`+regName+`":{"auth":"`+auth+`"}}}`, 0o600)); err != nil {
		t.Errorf("auths entry: %v", err)
	}
	wrong := base64.StdEncoding.EncodeToString([]byte("alice:wrong"))
	if err := head(write("wrong.json", `{"auths":{"`+regName+`":{"auth":"`+wrong+`"}}}`, 0o600)); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("wrong password: err = %v, want ErrUnauthorized", err)
	}
	if err := head(write("other.json", `{"auths":{"ghcr.io":{"auth":"`+auth+`"}}}`, 0o600)); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("no entry for the registry (anonymous): err = %v, want ErrUnauthorized", err)
	}
	if err := head(filepath.Join(dir, "missing.json")); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("missing file: err = %v, want ErrUnauthorized", err)
	}

	if runtime.GOOS == "windows" {
		return
	}
	// A credential helper: docker-credential-<name> get, server on stdin,
	// {"Username","Secret"} on stdout.
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nread server\n[ \"$1\" = get ] && [ \"$server\" = " + regName + " ] || exit 1\n" +
		"echo '{\"ServerURL\":\"" + regName + "\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}'\n"
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-regmirrortest"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	if err := head(write("helper.json", `{"credHelpers":{"`+regName+`":"regmirrortest"}}`, 0o600)); err != nil {
		t.Errorf("credential helper: %v", err)
	}
}
