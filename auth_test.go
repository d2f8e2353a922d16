package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/regmirror/regmirror/admin"
	"github.com/regmirror/regmirror/internal/testlog"
	"github.com/regmirror/regmirror/internal/testupstream"
)

// writeHtpasswd writes bcrypt entries (MinCost, to keep tests fast) for
// user/password pairs and returns the file's path.
func writeHtpasswd(t testing.TB, pairs ...string) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		h, err := bcrypt.GenerateFromPassword([]byte(pairs[i+1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", pairs[i], h)
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func basicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// startMirrorLogged is startMirror with the log kept (info level) in buf.
func startMirrorLogged(t testing.TB, up *testupstream.Server, buf io.Writer, mutate ...func(*config)) *mirror {
	t.Helper()
	cfg := defaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.registry(dockerHubName).URL = up.URL()
	for _, m := range mutate {
		m(&cfg)
	}
	if err := cfg.finish(); err != nil {
		t.Fatalf("config: %v", err)
	}
	a, err := newApp(cfg, testlog.Logger(io.MultiWriter(buf, testlog.To(t)), slog.LevelInfo))
	if err != nil {
		t.Fatalf("newApp: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select { // until Run hands the listener over, the startup server answers 503
	case <-a.serving:
	case err := <-done:
		t.Fatalf("mirror Run ended before serving: %v", err)
	}
	m := &mirror{app: a, cfg: cfg, host: a.Addr(), url: "http://" + a.Addr()}
	m.stop = func() { cancel(); <-done }
	t.Cleanup(m.stop)
	return m
}

// TestAccessControlHTTP: with [auth], every addressing form is checked
// after routing and before any cache or upstream work; the answers are
// 401 with a Basic challenge, 403 DENIED and 200; the user is logged,
// credentials never are, and never go upstream; denials are counted.
func TestAccessControlHTTP(t *testing.T) {
	hub, ghcr := testupstream.Start(t), testupstream.Start(t)
	alpine := hub.PushRandomImage(t, "library/alpine", "latest", 1, 1024)
	hub.PushRandomImage(t, "someuser/app", "1", 1, 1024)
	ghApp := ghcr.PushRandomImage(t, "myorg/app", "v1", 1, 1024)
	ghcr.PushRandomImage(t, "other/x", "1", 1, 1024)
	var logs testlog.Buffer
	m := startMirrorLogged(t, hub, &logs, func(c *config) {
		c.Registries = append(c.Registries, registryConfig{Name: ghcrName, URL: ghcr.URL(), HostAliases: []string{ghcrAlias}})
		c.Auth = &authConfig{
			HtpasswdFile: writeHtpasswd(t, "ci", "ci-secret-pw", "alice", "alice-secret-pw"),
			Rules: []authRule{
				{Users: []string{"ci"}, Allow: []string{"docker.io/**", "ghcr.io/myorg/**"}, Deny: []string{"docker.io/someuser/**"}},
				{Users: []string{"alice"}, Allow: []string{"**"}},
			},
		}
	})
	ci := basicAuth("ci", "ci-secret-pw")
	do := func(path, host, auth string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, m.url+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}

	t.Run("base needs an identity", func(t *testing.T) {
		resp, body := do("/v2/", "", "")
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Basic realm="regmirror"` || !strings.Contains(body, `"UNAUTHORIZED"`) {
			t.Fatalf("anonymous /v2/: %d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
		if resp, body := do("/v2/", "", ci); resp.StatusCode != http.StatusOK {
			t.Fatalf("/v2/ as ci: %d %s", resp.StatusCode, body)
		}
		if resp, _ := do("/v2/", "", basicAuth("ci", "wrong")); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("/v2/ with a wrong password: %d", resp.StatusCode)
		}
	})

	alpineDigest := testupstream.Digest(t, alpine).String()
	alpineLayer := testupstream.LayerDigests(t, alpine)[0].String()
	ghDigest := testupstream.Digest(t, ghApp).String()
	type form struct {
		name       string
		path, host string
	}
	// Each addressing form of an allowed and a denied repository.
	allowed := []form{
		{"bare name, default registry", "/v2/library/alpine/manifests/latest", ""},
		{"bare official name", "/v2/alpine/manifests/latest", ""},
		{"?ns=", "/v2/library/alpine/manifests/latest?ns=docker.io", ""},
		{"path prefix", "/v2/docker.io/library/alpine/manifests/latest", ""},
		{"Host alias", "/v2/myorg/app/manifests/v1", ghcrAlias},
		{"?ns= other registry", "/v2/myorg/app/manifests/v1?ns=ghcr.io", ""},
		{"path prefix other registry", "/v2/ghcr.io/myorg/app/manifests/" + ghDigest, ""},
		{"blob", "/v2/library/alpine/blobs/" + alpineLayer, ""},
		{"tag list", "/v2/library/alpine/tags/list", ""},
	}
	denied := []form{
		{"bare name", "/v2/someuser/app/manifests/1", ""},
		{"?ns=", "/v2/someuser/app/manifests/1?ns=docker.io", ""},
		{"path prefix", "/v2/docker.io/someuser/app/manifests/1", ""},
		{"Host alias", "/v2/other/x/manifests/1", ghcrAlias},
		{"?ns= other registry", "/v2/other/x/manifests/1?ns=ghcr.io", ""},
		{"path prefix other registry", "/v2/ghcr.io/other/x/manifests/1", ""},
		{"a cached blob through a denied name", "/v2/someuser/app/blobs/" + alpineLayer, ""},
		{"a cached manifest through a denied name", "/v2/someuser/app/manifests/" + alpineDigest, ""},
		{"tag list", "/v2/someuser/app/tags/list", ""},
		{"referrers", "/v2/someuser/app/referrers/" + alpineDigest, ""},
	}
	for _, f := range allowed {
		t.Run("allowed/"+f.name, func(t *testing.T) {
			if resp, body := do(f.path, f.host, ci); resp.StatusCode != http.StatusOK {
				t.Fatalf("as ci: %d %s", resp.StatusCode, body)
			}
			resp, body := do(f.path, f.host, "")
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatalf("without credentials: %d %s", resp.StatusCode, body)
			}
		})
	}
	for _, f := range denied {
		t.Run("denied/"+f.name, func(t *testing.T) {
			resp, body := do(f.path, f.host, ci)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `"DENIED"`) {
				t.Fatalf("as ci: %d %s, want 403 DENIED", resp.StatusCode, body)
			}
			if resp, body := do(f.path, f.host, basicAuth("alice", "alice-secret-pw")); resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized {
				t.Fatalf("as alice (allowed everything): %d %s", resp.StatusCode, body)
			}
		})
	}
	// alice's pulls went upstream; ci's denied ones must not have: count
	// them again with ci alone.
	hubBefore, ghcrBefore := hub.Requests(), ghcr.Requests()
	for _, f := range denied {
		do(strings.Replace(f.path, "/1", "/2", 1), f.host, ci) // tags alice never pulled
	}
	if hub.Requests() != hubBefore || ghcr.Requests() != ghcrBefore {
		t.Errorf("denied requests reached upstream: hub %d→%d, ghcr %d→%d", hubBefore, hub.Requests(), ghcrBefore, ghcr.Requests())
	}

	t.Run("credentials stay here", func(t *testing.T) {
		for _, secret := range []string{"ci-secret-pw", "alice-secret-pw", strings.TrimPrefix(ci, "Basic ")} {
			if hub.SawAuthorization(secret) || ghcr.SawAuthorization(secret) {
				t.Errorf("upstream received the client's credential %q", secret)
			}
			if strings.Contains(logs.String(), secret) {
				t.Errorf("the log holds the credential %q", secret)
			}
		}
		if !strings.Contains(logs.String(), "user=ci") || !strings.Contains(logs.String(), "user=alice") {
			t.Errorf("request log lines do not name the user:\n%s", logs.String())
		}
	})
	t.Run("denials counted by reason", func(t *testing.T) {
		_, body := do("/metrics", "", "")
		for _, reason := range []string{"denied", "unauthenticated"} {
			if !strings.Contains(body, `regmirror_access_denied_total{reason="`+reason+`"}`) ||
				strings.Contains(body, `regmirror_access_denied_total{reason="`+reason+`"} 0`) {
				t.Errorf("no %s denials counted:\n%s", reason, grepLines(body, "access_denied"))
			}
		}
		if strings.Contains(grepLines(body, "access_denied"), "ci") {
			t.Error("denial metrics name a user")
		}
	})
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestAccessRateLimit: a client over rate_per_client gets 429
// TOOMANYREQUESTS with Retry-After; another user is not affected.
func TestAccessRateLimit(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/alpine", "latest", 1, 1024)
	m := startMirror(t, up, func(c *config) {
		c.Auth = &authConfig{
			HtpasswdFile:  writeHtpasswd(t, "ci", "cipw", "bob", "bobpw"),
			RatePerClient: 0.01, // one request, then one per 100 s
			Rules:         []authRule{{Users: []string{"*"}, Allow: []string{"**"}}},
		}
	})
	url := m.url + "/v2/library/alpine/tags/list"
	if resp, body := get(t, http.MethodGet, url, "Authorization", basicAuth("ci", "cipw")); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: %d %s", resp.StatusCode, body)
	}
	resp, body := get(t, http.MethodGet, url, "Authorization", basicAuth("ci", "cipw"))
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "TOOMANYREQUESTS") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second request: %d %q %s, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if resp, body := get(t, http.MethodGet, url, "Authorization", basicAuth("bob", "bobpw")); resp.StatusCode != http.StatusOK {
		t.Fatalf("another user: %d %s", resp.StatusCode, body)
	}
}

func TestAuthConfig(t *testing.T) {
	t.Run("client CA needs TLS", func(t *testing.T) {
		cfg := defaultConfig()
		ca := filepath.Join(t.TempDir(), "ca.pem")
		os.WriteFile(ca, []byte("x"), 0o600)
		cfg.Auth = &authConfig{ClientCAFile: ca, TrustedNetworks: []string{"10.0.0.0/8"}}
		if err := cfg.finish(); err == nil || !strings.Contains(err.Error(), "client_ca_file") {
			t.Fatalf("client CA without TLS: %v", err)
		}
	})
	t.Run("keys as documented", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "c.toml")
		os.WriteFile(path, []byte(`
[auth]
htpasswd_file = "/etc/regmirror/htpasswd"
trusted_networks = ["10.20.0.0/16"]
admins = ["alice"]
rate_per_client = "2.5"

[[auth.rule]]
users = ["ci", "anonymous"]
allow = ["docker.io/**", "ghcr.io/myorg/**"]
deny  = ["docker.io/someuser/**"]
`), 0o600)
		cfg := defaultConfig()
		if err := loadConfigFile(&cfg, path); err != nil {
			t.Fatal(err)
		}
		a := cfg.Auth
		if a == nil || a.HtpasswdFile != "/etc/regmirror/htpasswd" || a.RatePerClient != 2.5 || len(a.Rules) != 1 ||
			a.Rules[0].Deny[0] != "docker.io/someuser/**" || a.Admins[0] != "alice" || a.TrustedNetworks[0] != "10.20.0.0/16" {
			t.Fatalf("decoded %+v", a)
		}
	})
	t.Run("startup errors name the line", func(t *testing.T) {
		up := testupstream.Start(t)
		bad := filepath.Join(t.TempDir(), "htpasswd")
		os.WriteFile(bad, []byte("ci:plaintext\n"), 0o600)
		cfg := defaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.DataDir = t.TempDir()
		cfg.registry(dockerHubName).URL = up.URL()
		cfg.Auth = &authConfig{HtpasswdFile: bad, TrustedNetworks: []string{"10.0.0.0/33"},
			Rules: []authRule{{Users: []string{"ghost"}, Allow: []string{"docker.io/[a]"}}}}
		if err := cfg.finish(); err != nil {
			t.Fatal(err)
		}
		_, err := newApp(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err == nil {
			t.Fatal("started")
		}
		for _, want := range []string{"line 1", "bcrypt", "trusted_networks[0]", "auth.rule[0].allow[0]", `"ghost"`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	})
}

// TestPreloadWithAuth: the mirror's own preloads pass access control with
// the management token, through the running server and through one that
// preload starts itself; nobody else gains anything by it.
func TestPreloadWithAuth(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomOCIImage(t, "org/app", "v2", 1, 8<<10)
	up.PushRandomOCIImage(t, "org/other", "v1", 1, 8<<10)
	auth := func(c *config) {
		c.Auth = &authConfig{TrustedNetworks: []string{"10.0.0.0/8"}, Rules: []authRule{{Users: []string{"anonymous"}, Allow: []string{"docker.io/**"}}}}
	}
	m := startMirror(t, up, auth)
	conf := writeTestConfig(t, m.cfg.DataDir, up.URL())
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[auth]\ntrusted_networks = [\"10.0.0.0/8\"]\n[[auth.rule]]\nusers = [\"anonymous\"]\nallow = [\"docker.io/**\"]\n")
	f.Close()
	if out := runCLI(t, "preload", "--config", conf, "--server", m.url, "org/app:v2"); !strings.Contains(out, "preloaded 1 of 1") {
		t.Fatalf("preload through the running server:\n%s", out)
	}
	if resp, _ := get(t, http.MethodGet, m.url+"/v2/org/app/manifests/v2"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("an unidentified client after the preload: %d, want 401", resp.StatusCode)
	}
	m.stop()
	if out := runCLI(t, "preload", "--config", conf, "org/other:v1"); !strings.Contains(out, "preloaded 1 of 1") {
		t.Fatalf("preload with its own server:\n%s", out)
	}
}

// TestWatchListWithAuth: the watch list reads graphs through the server,
// which lets it through access control with the management token.
func TestWatchListWithAuth(t *testing.T) {
	up := testupstream.Start(t)
	img := up.PushRandomImage(t, "library/app", "latest", 2, 8<<10)
	m := startMirror(t, up, func(c *config) {
		c.Watch = []watchConfig{{Images: []string{"docker.io/library/app:latest"}, Interval: duration{24 * time.Hour}}}
		c.Auth = &authConfig{TrustedNetworks: []string{"10.0.0.0/8"}, Rules: []authRule{{Users: []string{"anonymous"}, Allow: []string{"**"}}}}
	})
	<-m.app.watch.RunNow(context.Background())
	files := blobFiles(t, m.cfg.DataDir)
	for _, d := range graphDigests(t, img) {
		if !files[d.Encoded()] {
			t.Fatalf("%s not cached by the watch list behind access control", d)
		}
	}
}

// TestCatalogWithAuth: /v2/_catalog and the status page show a client only
// what access control lets it pull; an unidentified client sees nothing.
func TestCatalogWithAuth(t *testing.T) {
	up := testupstream.Start(t)
	up.PushRandomImage(t, "library/alpine", "latest", 1, 1024)
	up.PushRandomImage(t, "someuser/app", "1", 1, 1024)
	m := startMirror(t, up, func(c *config) {
		c.Auth = &authConfig{
			HtpasswdFile: writeHtpasswd(t, "ci", "cipw", "alice", "alicepw"),
			Rules: []authRule{
				{Users: []string{"ci"}, Allow: []string{"docker.io/**"}, Deny: []string{"docker.io/someuser/**"}},
				{Users: []string{"alice"}, Allow: []string{"**"}},
			},
		}
	})
	for _, p := range []string{"/v2/library/alpine/manifests/latest", "/v2/someuser/app/manifests/1"} {
		if resp, body := get(t, http.MethodGet, m.url+p, "Authorization", basicAuth("alice", "alicepw")); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s as alice: %d %s", p, resp.StatusCode, body)
		}
	}
	catalog := func(auth ...string) string {
		_, body := get(t, http.MethodGet, m.url+"/v2/_catalog", auth...)
		return string(body)
	}
	if got := catalog("Authorization", basicAuth("alice", "alicepw")); !strings.Contains(got, "someuser/app") || !strings.Contains(got, "library/alpine") {
		t.Errorf("alice's catalog: %s", got)
	}
	if got := catalog("Authorization", basicAuth("ci", "cipw")); strings.Contains(got, "someuser/app") || !strings.Contains(got, "library/alpine") {
		t.Errorf("ci's catalog: %s", got)
	}
	if got := catalog(); strings.Contains(got, "library/alpine") || strings.Contains(got, "someuser") {
		t.Errorf("an unidentified client's catalog: %s", got)
	}
	if resp, _ := get(t, http.MethodGet, m.url+"/_regmirror/status"); resp.StatusCode != http.StatusUnauthorized ||
		!strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("an unidentified client asking for the status page: %d %q; want 401 with a Basic challenge (a browser then asks for the login)",
			resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if resp, body := get(t, http.MethodGet, m.url+"/_regmirror/status", "Authorization", basicAuth("ci", "cipw")); resp.StatusCode != http.StatusOK || strings.Contains(string(body), "someuser") {
		t.Errorf("ci's status page: %d (mentions someuser: %v)", resp.StatusCode, strings.Contains(string(body), "someuser"))
	}
}

// TestRemoteAdminCredentialsStayWithTheServer: the transport of a remote
// admin's pulls (preload --server https://... --username) adds the admin's
// password only to requests to that server. A redirect the registry
// client follows (a presigned URL of the shared store) used to carry it
// there, and was forced to https.
func TestRemoteAdminCredentialsStayWithTheServer(t *testing.T) {
	var atStore string
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		atStore = r.Header.Get("Authorization")
		w.Write([]byte("blob"))
	}))
	defer store.Close()
	var atServer string
	server := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		atServer = r.Header.Get("Authorization")
		http.Redirect(w, r, store.URL+"/bucket/blob?X-Amz-Signature=abc", http.StatusTemporaryRedirect)
	}))
	defer server.Close()
	cl := admin.NewClient(server.URL, "")
	cl.Username, cl.Password = "alice", "s3cret"
	cl.HTTP.Transport = server.Client().Transport
	tg := &target{Client: cl, Remote: true, URL: server.URL}
	resp, err := (&http.Client{Transport: tg.PullTransport()}).Get(server.URL + "/v2/library/x/blobs/sha256:00")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "blob" {
		t.Fatalf("through the redirect: %d %q", resp.StatusCode, body)
	}
	if !strings.HasPrefix(atServer, "Basic ") {
		t.Errorf("the server got Authorization %q, want the admin's", atServer)
	}
	if atStore != "" {
		t.Errorf("the store got Authorization %q, want none", atStore)
	}
}
