package proxy

import (
	"net"
	"testing"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/upstream"
	"github.com/valyala/fasthttp"
)

// TestDockerHubAliasesAgree: every name clients use for Docker Hub means
// the same repository to the proxy's routing (path prefix and ?ns=) and to
// an upstream configured under that name. Before imageref, the proxy mapped
// registry.hub.docker.com to docker.io while upstream's isDockerHub did
// not, so "alpine" there stayed "alpine" instead of "library/alpine".
func TestDockerHubAliasesAgree(t *testing.T) {
	hub := unreachable(t, "docker.io")
	store, err := cache.Open(cache.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rec := &recordingAccess{}
	s, err := New(Options{Registries: []Upstream{hub}, Store: store, Access: rec})
	if err != nil {
		t.Fatal(err)
	}
	ask := func(path string) string {
		*rec = recordingAccess{}
		var req fasthttp.Request
		req.SetRequestURI(path)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 40000}, nil)
		s.Handler()(&ctx)
		return rec.registry + "/" + rec.repo
	}
	for _, alias := range []string{"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com", "Registry.Hub.Docker.COM"} {
		const want = "docker.io/library/alpine"
		if got := ask("/v2/" + alias + "/alpine/manifests/latest"); got != want {
			t.Errorf("proxy, path prefix %s: routed to %s, want %s", alias, got, want)
		}
		if got := ask("/v2/alpine/manifests/latest?ns=" + alias); got != want {
			t.Errorf("proxy, ?ns=%s: routed to %s, want %s", alias, got, want)
		}
		up, err := upstream.New(upstream.Options{Name: alias, URL: "http://127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		if got := up.Repository("alpine"); "docker.io/"+got != want {
			t.Errorf("upstream named %s: Repository(alpine) = %s, want library/alpine", alias, got)
		}
	}
}
