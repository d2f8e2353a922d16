package proxy

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestStartupAnswersThenHandsOver: while the cache opens, probes and
// clients get clear answers on the real port; after Handover the same
// listener (never closed) is served by the next server.
func TestStartupAnswersThenHandsOver(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}

	st := ServeStartup(ln, "", "", nil)

	if resp, _ := get("/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz while starting: %d, want 200", resp.StatusCode)
	}
	resp, body := get("/readyz")
	var ready readyBody
	if err := json.Unmarshal(body, &ready); err != nil || resp.StatusCode != http.StatusServiceUnavailable || ready.Ready ||
		len(ready.Checks) != 1 || ready.Checks[0].OK || ready.Checks[0].Reason == "" {
		t.Errorf("/readyz while starting: %d %s, want 503 with a failing index check", resp.StatusCode, body)
	}
	resp, body = get("/v2/library/alpine/manifests/latest")
	var wire wireBody
	if err := json.Unmarshal(body, &wire); err != nil || resp.StatusCode != http.StatusServiceUnavailable ||
		len(wire.Errors) != 1 || wire.Errors[0].Code != "UNAVAILABLE" || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a pull while starting: %d %s (Retry-After %q), want 503 UNAVAILABLE with Retry-After",
			resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}

	st.Handover()
	real := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("served") }}
	go func() { _ = real.Serve(ln) }()
	t.Cleanup(func() { _ = real.Shutdown() })

	for _, path := range []string{"/readyz", "/v2/"} {
		if resp, body := get(path); resp.StatusCode != http.StatusOK || string(body) != "served" {
			t.Errorf("%s after Handover: %d %q, want the next server's answer", path, resp.StatusCode, body)
		}
	}
}
