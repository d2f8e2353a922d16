package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestRefusedListQueriesAreNoOutage: a list request that upstream refuses
// as such (a 4xx but 401, 403, 404, 408, 429) is that client's problem, not
// upstream's trouble: before, one `tags/list?n=abc` marked the registry
// out for everyone (stale tags, 503 tag lists) and answered 503 itself.
// An n that is no count is refused here (400); other refusals answer 502;
// a referrers API upstream refuses (400, 405) answers 404, from which
// clients fall back to the referrers tag schema.
func TestRefusedListQueriesAreNoOutage(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
		case strings.Contains(r.URL.Path, "/referrers/"):
			w.WriteHeader(http.StatusMethodNotAllowed)
		case r.URL.Query().Has("last"):
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"errors":[{"code":"PAGINATION_NUMBER_INVALID","message":"no"}]}`))
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"name":"library/app","tags":["latest"]}`))
		}
	}))
	defer up.Close()
	s, _, _ := serverInFrontOf(t, up.URL)
	for _, tc := range []struct {
		uri    string
		status int
		code   string
	}{
		{"/v2/library/app/tags/list?n=abc", http.StatusBadRequest, "PAGINATION_NUMBER_INVALID"},
		{"/v2/library/app/tags/list?n=-5", http.StatusBadRequest, "PAGINATION_NUMBER_INVALID"},
		{"/v2/library/app/tags/list?n=1&last=x", http.StatusBadGateway, "UNSUPPORTED"},
		{"/v2/library/app/referrers/" + digest.FromString("x").String(), http.StatusNotFound, "UNSUPPORTED"},
	} {
		resp := serveOnce(s, http.MethodGet, tc.uri, "127.0.0.1")
		var body struct{ Errors []struct{ Code string } }
		_ = json.Unmarshal(resp.Body(), &body)
		if resp.StatusCode() != tc.status || len(body.Errors) != 1 || body.Errors[0].Code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.uri, resp.StatusCode(), resp.Body(), tc.status, tc.code)
		}
		if s.health.out("docker.io", time.Now()) {
			t.Fatalf("%s marked the registry out", tc.uri)
		}
	}
	if resp := serveOnce(s, http.MethodGet, "/v2/library/app/tags/list", "127.0.0.1"); resp.StatusCode() != http.StatusOK {
		t.Errorf("a plain tag list after them: %d %s", resp.StatusCode(), resp.Body())
	}
}
