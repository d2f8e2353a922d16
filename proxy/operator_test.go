package proxy

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/status"
	"github.com/regmirror/regmirror/upstream"
)

// stubUpstream is a registry that is never reached.
type stubUpstream struct{ name string }

func (u stubUpstream) Name() string                  { return u.name }
func (u stubUpstream) Repository(name string) string { return name }
func (u stubUpstream) HeadManifest(context.Context, string, string) (upstream.Descriptor, error) {
	return upstream.Descriptor{}, upstream.ErrUnavailable
}
func (u stubUpstream) GetManifest(context.Context, string, string) ([]byte, upstream.Descriptor, error) {
	return nil, upstream.Descriptor{}, upstream.ErrUnavailable
}
func (u stubUpstream) HeadBlob(context.Context, string, digest.Digest) (int64, error) {
	return 0, upstream.ErrUnavailable
}
func (u stubUpstream) GetBlob(context.Context, string, digest.Digest, int64) (*upstream.Blob, error) {
	return nil, upstream.ErrUnavailable
}
func (u stubUpstream) ListTags(context.Context, string, string) (upstream.TagPage, error) {
	return upstream.TagPage{}, upstream.ErrUnavailable
}

// policy lets clients that send "X-Team: corp" see registry corp.
type policy struct{}

func (policy) MayPull(ctx *fasthttp.RequestCtx, registry, _ string) bool {
	return registry != "corp" || string(ctx.Request.Header.Peek("X-Team")) == "corp"
}

// serveInMemory serves s on an in-memory listener and returns a client.
func serveInMemory(t *testing.T, s *Server) *http.Client {
	t.Helper()
	ln := fasthttputil.NewInmemoryListener()
	go s.Serve(ln)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return ln.Dial() }}}
}

func fetch(t *testing.T, c *http.Client, path string, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://mirror"+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestOperatorViewsFollowPullPolicy(t *testing.T) {
	store := tempStore(t)
	d := digest.FromString("m")
	for _, rr := range [][2]string{{"docker.io", "library/a"}, {"corp", "secret/app"}} {
		if err := store.SetTag(rr[0], rr[1], "1", cache.TagRecord{Digest: d}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(Options{
		Registries: []Upstream{stubUpstream{"docker.io"}, stubUpstream{"corp"}},
		Store:      store,
		Operator:   OperatorOptions{PullPolicy: policy{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.status.Request(status.Event{Registry: "corp", Repo: "secret/app", Endpoint: "manifest", Outcome: "miss", Status: 200})
	s.status.Request(status.Event{Registry: "docker.io", Repo: "library/a", Endpoint: "manifest", Outcome: "miss", Status: 200})
	c := serveInMemory(t, s)

	if code, body := fetch(t, c, "/v2/_catalog"); code != 200 || body != `{"repositories":["library/a"]}` {
		t.Errorf("catalog for an outsider: %d %s", code, body)
	}
	if code, body := fetch(t, c, "/v2/_catalog", "X-Team", "corp"); code != 200 || body != `{"repositories":["corp/secret/app","library/a"]}` {
		t.Errorf("catalog for corp: %d %s", code, body)
	}
	code, body := fetch(t, c, "/_regmirror/status")
	if code != 200 || strings.Contains(body, "secret/app") {
		t.Errorf("status for an outsider: %d, shows corp's repository: %v", code, strings.Contains(body, "secret/app"))
	}
	var m status.Model
	if err := json.Unmarshal([]byte(body), &m); err != nil || m.SinceStart.Requests != 2 {
		t.Errorf("status model %v: %+v", err, m.SinceStart)
	}
	if _, body := fetch(t, c, "/_regmirror/status", "X-Team", "corp"); !strings.Contains(body, "secret/app") {
		t.Error("status for corp hides its repository")
	}
	if code, body := fetch(t, c, "/"); code != 200 || !strings.Contains(body, "<html") {
		t.Errorf("page: %d %.80s", code, body)
	}
}

// denyAll may pull nothing.
type denyAll struct{}

func (denyAll) MayPull(*fasthttp.RequestCtx, string, string) bool { return false }

func TestStatusPageNeedsPull(t *testing.T) {
	store := tempStore(t)
	s, err := New(Options{Registries: []Upstream{stubUpstream{"docker.io"}}, Store: store, Operator: OperatorOptions{PullPolicy: denyAll{}}})
	if err != nil {
		t.Fatal(err)
	}
	c := serveInMemory(t, s)
	for _, p := range []string{"/", "/_regmirror/status", "/_regmirror/status.js"} {
		if code, _ := fetch(t, c, p); code != http.StatusForbidden {
			t.Errorf("%s for a client that may pull nothing: %d", p, code)
		}
	}
	if code, body := fetch(t, c, "/v2/_catalog"); code != 200 || body != `{"repositories":[]}` {
		t.Errorf("catalog: %d %s", code, body)
	}
}

// budgetUpstream is a stub that announces a pull budget.
type budgetUpstream struct {
	stubUpstream
	st *upstream.Stats
}

func (u budgetUpstream) Stats() upstream.Stats { return *u.st }

func TestShieldFollowsTheBudgetAndLogs(t *testing.T) {
	store := tempStore(t)
	st := &upstream.Stats{}
	var logs strings.Builder
	s, err := New(Options{
		Registries: []Upstream{budgetUpstream{stubUpstream{"docker.io"}, st}, stubUpstream{"ghcr.io"}},
		Store:      store,
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.shielded("docker.io") || s.shielded("ghcr.io") {
		t.Fatal("shielded without a reading")
	}
	reading := func(remaining int, at time.Time) {
		*st = upstream.Stats{HasRateLimit: true, RateLimit: upstream.RateLimit{Limit: 100, Remaining: remaining, Window: 6 * time.Hour, At: at}}
	}
	reading(10, time.Now()) // the default reserve is 10% of 100: 10 is not below it
	if s.shielded("docker.io") {
		t.Error("shielded at the reserve")
	}
	reading(9, time.Now())
	if !s.shielded("docker.io") || !strings.Contains(logs.String(), "rate-limit shield up") {
		t.Errorf("below the reserve: shielded %v, log %q", s.shielded("docker.io"), logs.String())
	}
	reading(9, time.Now().Add(-7*time.Hour)) // older than its window: the budget is back
	if s.shielded("docker.io") || !strings.Contains(logs.String(), "rate-limit shield down") {
		t.Errorf("a reading older than its window still shields; log %q", logs.String())
	}
	if n := strings.Count(logs.String(), "shield up"); n != 1 {
		t.Errorf("shield up logged %d times, want once per change", n)
	}
	s.opts.Operator.RateLimitReserveFraction = -1
	reading(0, time.Now())
	if s.shielded("docker.io") {
		t.Error("the shield is off (reserve 0) but shielded")
	}
}
