package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"time"

	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/regmirror/regmirror/internal/logline"
	"github.com/regmirror/regmirror/internal/testlog"
	"github.com/valyala/fasthttp"
)

// requestLines returns the JSON request log lines whose path is path.
func requestLines(t *testing.T, logs, path string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("not a JSON log line: %q", sc.Text())
		}
		if line["msg"] == "request" && line["path"] == path {
			out = append(out, line)
		}
	}
	return out
}

func jsonLogMirror(t *testing.T) (*hotMirror, *testlog.Buffer) {
	logs := &testlog.Buffer{}
	m := startHotMirror(t, func(o *Options) { o.Logger = logline.New(logs, logline.JSON, slog.LevelInfo) })
	return m, logs
}

func askWithAgent(t *testing.T, url, agent string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("User-Agent", agent)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestRequestLineFastPathMatchesSlog: serve's logger formats the request
// line itself (internal/logline); for every shape of exchange the bytes
// equal what the same slog handler writes from the attributes.
func TestRequestLineFastPathMatchesSlog(t *testing.T) {
	at := time.Date(2026, 11, 30, 13, 9, 29, 123456789, time.UTC)
	exchanges := []*exchange{
		{method: "GET", path: "/v2/library/alpine/manifests/latest", status: 200, client: "127.0.0.1", userAgent: "docker/24.0.7 go/go1.21.4 (linux)", registry: "docker.io", outcome: OutcomeHit},
		{method: "HEAD", path: "/v2/", status: 401, client: "::1"},
		{method: "GET", path: "/v2/x/blobs/sha256:00", status: 404, client: "10.0.0.1", asked: "quay.io", user: "ci bot", errorCode: "NAME_UNKNOWN", detail: `refused: "quay.io" = not configured`},
		{method: "GET", path: "/metrics", status: 200, client: "10.0.0.2", endpoint: "metrics"},
	}
	for _, format := range []logline.Format{logline.Text, logline.JSON} {
		for i, e := range exchanges {
			e.start = at.Add(-412 * time.Microsecond)
			var fast, slow bytes.Buffer
			// The fast server's slog handler writes nowhere: only its fast
			// path can fill fast.
			fs := &Server{log: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			fs.lines = logline.LinesOf(logline.New(&fast, format, slog.LevelDebug))
			if fs.lines == nil {
				t.Fatal("serve's logger has no fast path")
			}
			var h slog.Handler = slog.NewTextHandler(&slow, &slog.HandlerOptions{Level: slog.LevelDebug})
			if format == logline.JSON {
				h = slog.NewJSONHandler(&slow, &slog.HandlerOptions{Level: slog.LevelDebug})
			}
			ss := &Server{log: slog.New(h)}
			var err error
			if i == 2 {
				err = errors.New("upstream: \x00 said no")
			}
			fs.logRequest(e, at, 4096, err)
			ss.logRequest(e, at, 4096, err)
			if fast.String() != slow.String() || fast.Len() == 0 {
				t.Errorf("format %d, exchange %d:\nfast: %q\nslog: %q", format, i, fast.String(), slow.String())
			}
		}
	}
}

// TestRequestLogNamesClient: a request line carries the client's address
// and user agent, and its duration as float seconds named duration_s.
func TestRequestLogNamesClient(t *testing.T) {
	m, logs := jsonLogMirror(t)
	const agent = "containerd/v1.7.13 regmirror-test"
	if code := askWithAgent(t, m.url+"/v2/", agent); code != 200 {
		t.Fatalf("/v2/: %d", code)
	}
	lines := requestLines(t, logs.String(), "/v2/")
	if len(lines) != 1 {
		t.Fatalf("%d request lines for /v2/, want 1:\n%s", len(lines), logs.String())
	}
	line := lines[0]
	if line["client"] != "127.0.0.1" || line["user_agent"] != agent {
		t.Errorf("client %v, user_agent %v; want 127.0.0.1 and %q", line["client"], line["user_agent"], agent)
	}
	if d, ok := line["duration_s"].(float64); !ok || d <= 0 || d > 60 {
		t.Errorf("duration_s = %#v, want float seconds", line["duration_s"])
	}
	if _, ok := line["duration"]; ok {
		t.Errorf("a duration in another unit beside duration_s: %v", line["duration"])
	}
}

// TestRequestLogNamesRefusedRegistry: a request for a registry the mirror
// does not serve, by ?ns= or by a path prefix, is logged with the registry
// it asked for.
func TestRequestLogNamesRefusedRegistry(t *testing.T) {
	m, logs := jsonLogMirror(t)
	for _, tc := range []struct{ path, query string }{
		{"/v2/library/alpine/manifests/latest", "?ns=quay.io"},
		{"/v2/quay.io/prometheus/prometheus/manifests/latest", ""},
	} {
		if code := askWithAgent(t, m.url+tc.path+tc.query, "test"); code != http.StatusForbidden {
			t.Fatalf("%s%s: %d, want 403", tc.path, tc.query, code)
		}
		lines := requestLines(t, logs.String(), tc.path)
		if len(lines) != 1 {
			t.Fatalf("%d request lines for %s, want 1:\n%s", len(lines), tc.path, logs.String())
		}
		if lines[0]["registry_asked"] != "quay.io" || lines[0]["error"] != "DENIED" {
			t.Errorf("%s%s logged as %v; want registry_asked=quay.io, error DENIED", tc.path, tc.query, lines[0])
		}
	}
}

// TestRecycledExchangeStartsClean: an exchange back from the pool carries
// nothing of the request before it, and one a body stream still holds is
// not recycled (the stream's end writes its line later).
func TestRecycledExchangeStartsClean(t *testing.T) {
	s := &Server{}
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, nil)
	ctx.Request.SetRequestURI("/v2/")
	for range 100 {
		e := newExchange(s, &ctx)
		if e.asked != "" || e.user != "" || e.errorCode != "" || e.detail != "" || e.registry != "" ||
			e.outcome != OutcomeNone || e.status != 0 || e.logged.Load() {
			t.Fatalf("a new exchange carries an old request's state: %+v", e)
		}
		e.asked, e.user, e.errorCode, e.detail, e.registry = "quay.io", "ci", "DENIED", "no", "docker.io"
		e.outcome, e.status = OutcomeHit, 403
		e.logged.Store(true)
		e.release(reply{})
	}
	held := newExchange(s, &ctx)
	held.user = "streaming"
	held.logged.Store(true) // even so: the stream holds it
	held.release(reply{stream: strings.NewReader("body")})
	if held.user != "streaming" {
		t.Fatal("an exchange a body stream holds was recycled")
	}
}
