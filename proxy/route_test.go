package proxy

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		path     string
		endpoint endpoint
		name     string
		ref      string
		err      error
	}{
		{"/v2/", endpointBase, "", "", nil},
		{"/v2", endpointBase, "", "", nil},
		{"/v2/library/alpine/manifests/latest", endpointManifest, "library/alpine", "latest", nil},
		{"/v2/alpine/manifests/sha256:abc", endpointManifest, "alpine", "sha256:abc", nil},
		{"/v2/a/manifests/b/manifests/c", endpointManifest, "a/manifests/b", "c", nil},
		{"/v2/ghcr.io/org/app/blobs/sha256:00", endpointBlob, "ghcr.io/org/app", "sha256:00", nil},
		{"/v2/org/blobs/app/blobs/x", endpointBlob, "org/blobs/app", "x", nil},
		{"/v2/library/alpine/tags/list", endpointTags, "library/alpine", "", nil},
		{"/v2/library/alpine/blobs/uploads/", endpointUpload, "library/alpine", "", nil},
		{"/v2/library/alpine/blobs/uploads/123", endpointUpload, "library/alpine", "", nil},
		{"/v2/library/alpine/blobs/uploads", endpointUpload, "library/alpine", "", nil},
		{"/v2/a/blobs/uploads/b/manifests/c", endpointManifest, "a/blobs/uploads/b", "c", nil},
		{"/v2/blobs/uploads/", 0, "", "", errUnknownEndpoint},
		{"/v2/a/blobs/uploads/1/2", 0, "", "", errUnknownEndpoint},
		{"/v2/library/alpine/referrers/sha256:00", endpointReferrers, "library/alpine", "sha256:00", nil},
		{"/v2/alpine", 0, "", "", errUnknownEndpoint},
		{"/v2/manifests/latest", 0, "", "", errUnknownEndpoint},
		{"/v2/library/alpine/other/latest", 0, "", "", errUnknownEndpoint},
		{"/v1/library/alpine/manifests/latest", 0, "", "", errUnknownEndpoint},
		{"/", 0, "", "", errUnknownEndpoint},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := parsePath(tt.path)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if got.endpoint != tt.endpoint || got.name != tt.name || got.ref != tt.ref {
				t.Fatalf("got %+v, want endpoint %d name %q ref %q", got, tt.endpoint, tt.name, tt.ref)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	valid := []string{"alpine", "library/alpine", "a/b/c/d", "my-org/my_app", "a__b", "a.b/c", "x---y", "0/1"}
	for _, n := range valid {
		if err := validateName(n); err != nil {
			t.Errorf("validateName(%q) = %v, want nil", n, err)
		}
	}
	invalid := []string{"", "Alpine", "a//b", "/a", "a/", "-a", "a-", "a_-b", "a..b", "../etc", "a/../b", "a b", "a\x00b", strings.Repeat("a", 256), "a%2fb"}
	for _, n := range invalid {
		if err := validateName(n); !errors.Is(err, errNameInvalid) {
			t.Errorf("validateName(%q) = %v, want errNameInvalid", n, err)
		}
	}
}

func TestParseReference(t *testing.T) {
	hex := strings.Repeat("a", 64)
	tests := []struct {
		in      string
		tag     string
		digest  string
		wantErr error
	}{
		{"latest", "latest", "", nil},
		{"v1.2.3-rc_1", "v1.2.3-rc_1", "", nil},
		{"sha256:" + hex, "", "sha256:" + hex, nil},
		{"sha256:" + hex[:63], "", "", errDigestInvalid},
		{"sha512:" + strings.Repeat("a", 128), "", "", errDigestInvalid},
		{"sha256:" + strings.ToUpper(hex), "", "", errDigestInvalid},
		{".hidden", "", "", errReferenceInvalid},
		{"-x", "", "", errReferenceInvalid},
		{strings.Repeat("t", 129), "", "", errReferenceInvalid},
		{"", "", "", errReferenceInvalid},
	}
	for _, tt := range tests {
		got, err := parseReference(tt.in)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("parseReference(%q) err = %v, want %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && (got.tag != tt.tag || got.digest.String() != tt.digest) {
			t.Errorf("parseReference(%q) = %+v", tt.in, got)
		}
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/library/alpine/manifests/latest", "/v2/a/blobs/sha256:00", "/v2/x/tags/list", "/v2/a/blobs/uploads/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		p, err := parsePath(path)
		if err != nil {
			return
		}
		if p.endpoint == endpointManifest || p.endpoint == endpointBlob {
			if strings.Contains(p.ref, "/") {
				t.Fatalf("reference %q contains a slash", p.ref)
			}
			if validateName(p.name) == nil && strings.Contains(p.name, "..") {
				t.Fatalf("name %q with .. validated", p.name)
			}
		}
	})
}

func FuzzParseReference(f *testing.F) {
	f.Add("latest")
	f.Add("sha256:" + strings.Repeat("0", 64))
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseReference(s)
		if err != nil {
			return
		}
		if r.digest != "" && (len(r.digest.Encoded()) != 64 || strings.ContainsAny(r.digest.Encoded(), "/.")) {
			t.Fatalf("unsafe digest %q accepted", r.digest)
		}
		if r.tag != "" && strings.ContainsAny(r.tag, "/\x00") {
			t.Fatalf("unsafe tag %q accepted", r.tag)
		}
	})
}

// TestRouterResolve: the router alone (no server, no request) decides
// which configured registry every addressing form names, and refuses the
// others.
func TestRouterResolve(t *testing.T) {
	hub := unreachable(t, "docker.io")
	r, err := newRouter(map[string]Upstream{
		"docker.io":          hub,
		"ghcr.io":            stubUpstream{"ghcr.io"},
		"registry.corp:5000": stubUpstream{"registry.corp:5000"},
	}, "docker.io", map[string]string{"ghcr.mirror.lan": "ghcr.io", "corp.mirror.lan:8443": "registry.corp:5000"})
	if err != nil {
		t.Fatal(err)
	}
	manifest := func(name string) parsedPath {
		return parsedPath{endpoint: endpointManifest, name: name, ref: "latest"}
	}
	for _, c := range []struct {
		what      string
		p         parsedPath
		ns, host  string
		registry  string
		repo      string
		wantError error
	}{
		{"bare: the default, with Docker Hub's defaulting", manifest("alpine"), "", "mirror:5000", "docker.io", "library/alpine", nil},
		{"?ns=", manifest("org/app"), "ghcr.io", "", "ghcr.io", "org/app", nil},
		{"?ns= with a port", manifest("team/a"), "registry.corp:5000", "", "registry.corp:5000", "team/a", nil},
		{"?ns= names Docker Hub by another name", manifest("alpine"), "registry-1.docker.io", "", "docker.io", "library/alpine", nil},
		{"path prefix", manifest("ghcr.io/org/app"), "", "", "ghcr.io", "org/app", nil},
		{"path prefix, Docker Hub alias, any case", manifest("Index.Docker.IO/alpine"), "", "", "docker.io", "library/alpine", nil},
		{"path prefix and the same ?ns= (override_path)", manifest("ghcr.io/org/app"), "ghcr.io", "", "ghcr.io", "org/app", nil},
		{"a host-like first component ?ns= does not name is part of the name", manifest("ghcr.io/org/app"), "docker.io", "", "docker.io", "ghcr.io/org/app", nil},
		{"a repository that begins with its registry's name, behind it (a peer's form, cluster.peerPath)", manifest("ghcr.io/ghcr.io/team"), "ghcr.io", "", "ghcr.io", "ghcr.io/team", nil},
		{"where a port is not allowed", manifest("localhost:5000/x"), "ghcr.io", "", "", "", errNameInvalid},
		{"Host alias", manifest("org/app"), "", "ghcr.mirror.lan", "ghcr.io", "org/app", nil},
		{"Host alias with a port it was not written with", manifest("org/app"), "", "GHCR.mirror.lan:443", "ghcr.io", "org/app", nil},
		{"Host alias written with its port", manifest("team/a"), "", "corp.mirror.lan:8443", "registry.corp:5000", "team/a", nil},
		{"?ns= wins over a Host alias", manifest("alpine"), "docker.io", "ghcr.mirror.lan", "docker.io", "library/alpine", nil},
		{"an unknown Host is the default", manifest("alpine"), "", "evil.example:80", "docker.io", "library/alpine", nil},
		{"unconfigured ?ns=", manifest("x"), "evil.example", "", "", "", errRegistryNotAllowed},
		{"unconfigured path prefix", manifest("evil.example/x"), "", "", "", "", errRegistryNotAllowed},
		{"invalid name", manifest("Library/Alpine"), "", "", "", "", errNameInvalid},
		{"invalid tag", parsedPath{endpoint: endpointManifest, name: "alpine", ref: "-bad"}, "", "", "", "", errReferenceInvalid},
		{"invalid digest", parsedPath{endpoint: endpointBlob, name: "alpine", ref: "md5:abc"}, "", "", "", "", errDigestInvalid},
	} {
		rq, err := r.resolve(c.p, c.ns, []byte(c.host))
		if c.wantError != nil {
			if !errors.Is(err, c.wantError) {
				t.Errorf("%s: err %v, want %v", c.what, err, c.wantError)
			}
			continue
		}
		if err != nil || rq.registry != c.registry || rq.repo != c.repo || rq.up.Name() != c.registry {
			t.Errorf("%s: %s/%s (%v), want %s/%s", c.what, rq.registry, rq.repo, err, c.registry, c.repo)
		}
	}
}

// A default registry that is not configured is refused when the router is
// made, not found missing by the first bare request.
func TestNewRouterNeedsItsDefault(t *testing.T) {
	if _, err := newRouter(map[string]Upstream{"ghcr.io": stubUpstream{"ghcr.io"}}, "docker.io", nil); err == nil {
		t.Fatal("a router whose default registry is not configured was made")
	}
}

// withoutPort splits exactly as net.SplitHostPort does: every string of up
// to six bytes over the characters that matter, and some longer ones.
func TestWithoutPortMatchesSplitHostPort(t *testing.T) {
	check := func(s string) {
		host, ok := withoutPort([]byte(s))
		want, _, err := net.SplitHostPort(s)
		if ok != (err == nil) || ok && string(host) != want {
			t.Fatalf("withoutPort(%q) = %q, %v; net.SplitHostPort: %q, %v", s, host, ok, want, err)
		}
	}
	const alphabet = "[]:a1"
	var walk func(prefix string)
	walk = func(prefix string) {
		check(prefix)
		if len(prefix) == 6 {
			return
		}
		for _, c := range alphabet {
			walk(prefix + string(c))
		}
	}
	walk("")
	for _, s := range []string{"mirror.lan:5000", "[::1]:5000", "[fe80::1%eth0]:443", "[::1]", "::1", "a:b:c", "[a]b:80", "host:", ":80"} {
		check(s)
	}
}

// A Host alias costs a warm hit no allocation, with or without the port
// it was written with, in any case.
func TestHostAliasAllocatesNothing(t *testing.T) {
	r, err := newRouter(map[string]Upstream{"docker.io": stubUpstream{"docker.io"}, "ghcr.io": stubUpstream{"ghcr.io"}},
		"docker.io", map[string]string{"ghcr.mirror.lan": "ghcr.io"})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"ghcr.mirror.lan", "GHCR.Mirror.LAN:5000", "[::1]:5000"} {
		b := []byte(host)
		if n := testing.AllocsPerRun(100, func() { r.alias(b) }); n != 0 {
			t.Errorf("alias(%q): %.0f allocations", host, n)
		}
	}
	if name, ok := r.alias([]byte("GHCR.Mirror.LAN:5000")); !ok || name != "ghcr.io" {
		t.Errorf("alias of a Host with a port and capitals = %q, %v", name, ok)
	}
	// A Host longer than the stack buffer takes strings.ToLower, and
	// still finds its alias.
	long := strings.Repeat("a", maxAliasedHost) + ".mirror.lan"
	r.hostAliases[long] = "ghcr.io"
	if name, ok := r.alias([]byte(strings.ToUpper(long) + ":5000")); !ok || name != "ghcr.io" {
		t.Errorf("alias of a %d-byte Host = %q, %v", len(long), name, ok)
	}
	// Beyond ASCII the case rules stay strings.ToLower's, as before (U+0130
	// lowercases to 'i').
	if name, ok := r.alias([]byte("GHCR.MİRROR.LAN")); !ok || name != "ghcr.io" {
		t.Errorf("a Host that strings.ToLower makes the alias = %q, %v", name, ok)
	}
}
