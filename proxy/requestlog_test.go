package proxy

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
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

func jsonLogMirror(t *testing.T) (*hotMirror, *logBuffer) {
	logs := &logBuffer{}
	m := startHotMirror(t, func(o *Options) { o.Logger = slog.New(slog.NewJSONHandler(logs, nil)) })
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
