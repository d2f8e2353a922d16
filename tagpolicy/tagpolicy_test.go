package tagpolicy

import (
	"testing"
	"time"
)

func dur(d time.Duration) *time.Duration { return &d }

func TestLookup(t *testing.T) {
	p, err := New([]Rule{
		{Match: "docker.io/library/*:[0-9]*.[0-9]*.[0-9]*", Immutable: true},
		{Match: "**:latest", TTL: dur(time.Minute), StaleWhileRevalidate: true},
		{Match: "ghcr.io/myorg/**", TTL: dur(0)},
		{Match: "registry.corp:5000/team/*/app:v?"},
	}, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		registry, repo, tag string
		rule                int
		ttl                 time.Duration
		immutable, swr      bool
	}{
		{"docker.io", "library/alpine", "3.20.1", 0, 5 * time.Minute, true, false},
		{"docker.io", "library/alpine", "3.20", -1, 5 * time.Minute, false, false},
		{"docker.io", "library/alpine", "latest", 1, time.Minute, false, true},
		{"docker.io", "org/alpine", "3.20.1", -1, 5 * time.Minute, false, false}, // * stays within a component
		{"docker.io", "library/a/b", "1.2.3", -1, 5 * time.Minute, false, false},
		{"ghcr.io", "myorg/app", "main", 2, 0, false, false},
		{"ghcr.io", "myorg/deep/er/app", "v1", 2, 0, false, false},
		{"ghcr.io", "myorg/app", "latest", 1, time.Minute, false, true}, // first match wins
		{"ghcr.io", "other/app", "main", -1, 5 * time.Minute, false, false},
		{"registry.corp:5000", "team/x/app", "v1", 3, 5 * time.Minute, false, false},
		{"registry.corp:5000", "team/x/app", "v10", -1, 5 * time.Minute, false, false},
	}
	for _, c := range cases {
		d := p.Lookup(c.registry, c.repo, c.tag)
		if d.Rule != c.rule || d.TTL != c.ttl || d.Immutable != c.immutable || d.StaleWhileRevalidate != c.swr {
			t.Errorf("%s/%s:%s: got %+v, want rule %d ttl %v immutable %v swr %v", c.registry, c.repo, c.tag, d, c.rule, c.ttl, c.immutable, c.swr)
		}
	}
}

func TestDoubleStar(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"**", "docker.io/library/alpine", true},
		{"docker.io/**", "docker.io/library/alpine", true},
		{"docker.io/**/alpine", "docker.io/library/alpine", true},
		{"docker.io/**/alpine", "docker.io/alpine", true}, // ** may be empty
		{"docker.io/**/alpine", "docker.io/a/b/c/alpine", true},
		{"docker.io/**/alpine", "docker.io/a/b/c/alpine2", false},
		{"*/library/*", "quay.io/library/x", true},
		{"*", "docker.io/library/alpine", false},
		{"ghcr.io/**", "ghcr.io", true},
	}
	for _, c := range cases {
		p, err := New([]Rule{{Match: c.pattern}}, time.Minute)
		if err != nil {
			t.Fatalf("%s: %v", c.pattern, err)
		}
		reg, repo, _ := cut(c.name)
		if got := p.Lookup(reg, repo, "x").Rule == 0; got != c.want {
			t.Errorf("%q against %q: %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

func cut(s string) (string, string, bool) {
	for i := range s {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func TestBadRules(t *testing.T) {
	for _, r := range []Rule{
		{Match: ""},
		{Match: "docker.io/**", Immutable: true, TTL: dur(time.Minute)},
		{Match: "docker.io/**", Immutable: true, StaleWhileRevalidate: true},
		{Match: "docker.io/**", TTL: dur(-time.Second)},
		{Match: "docker.io/[a-/x"},
		{Match: "docker.io/x:[z-"},
		{Match: "docker.io//x"},
		{Match: "docker.io/a**/x"},
		{Match: "docker.io/x:"},
	} {
		if _, err := New([]Rule{r}, time.Minute); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
}

func TestFreshAndExplain(t *testing.T) {
	p, _ := New([]Rule{{Match: "docker.io/library/*:1.*", Immutable: true}, {Match: "**:latest", TTL: dur(0)}}, time.Hour)
	now := time.Now()
	if d := p.Lookup("docker.io", "library/a", "1.2"); !d.Fresh(now.Add(-1000*time.Hour), now) {
		t.Error("immutable tag not fresh")
	}
	if d := p.Lookup("docker.io", "library/a", "latest"); d.Fresh(now, now) {
		t.Error("ttl 0s tag fresh")
	}
	if d := p.Lookup("docker.io", "library/a", "edge"); !d.Fresh(now.Add(-time.Minute), now) || d.Fresh(now.Add(-2*time.Hour), now) {
		t.Error("default ttl not applied")
	}
	checks, d := p.Explain("docker.io", "library/a", "latest")
	if len(checks) != 2 || !checks[0].NameOK || checks[0].TagOK || d.Rule != 1 {
		t.Errorf("explain: %+v %+v", checks, d)
	}
	var nilPolicy *Policy
	if d := nilPolicy.Lookup("docker.io", "x", "y"); d.Rule != -1 {
		t.Errorf("nil policy: %+v", d)
	}
}
