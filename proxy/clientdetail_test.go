package proxy

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/regmirror/regmirror/upstream"
)

// TestToWireHostileUpstream: refused upstream answers and invalid manifests
// are 502s, and the detail a client gets from any upstream error is
// upstream.ClientReason's text, never the error's own (which may hold
// upstream bodies, URLs and internal addresses).
func TestToWireHostileUpstream(t *testing.T) {
	leak := "GET http://169.254.169.254/latest/meta-data: {\"AccessKeyId\":\"AKIA-SECRET\"}"
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("%w: %s", upstream.ErrRefused, leak), 502, "UNAVAILABLE"},
		{fmt.Errorf("%w: %s", upstream.ErrInvalidManifest, leak), 502, "MANIFEST_INVALID"},
		{fmt.Errorf("%w: %s", upstream.ErrUnavailable, leak), 503, "UNAVAILABLE"},
		{fmt.Errorf("%w: %s", upstream.ErrUnauthorized, leak), 401, "UNAUTHORIZED"},
		{fmt.Errorf("private registry x: %w", fmt.Errorf("%w: %s", upstream.ErrNotFound, leak)), 404, "MANIFEST_UNKNOWN"},
	} {
		w := toWire(tc.err, resourceManifest)
		if w.Status != tc.status || w.Code != tc.code {
			t.Errorf("toWire(%v) = %d %s, want %d %s", tc.err, w.Status, w.Code, tc.status, tc.code)
		}
		for _, f := range []string{"169.254", "AKIA", "meta-data"} {
			if strings.Contains(w.Detail, f) || strings.Contains(w.Message, f) {
				t.Errorf("toWire(%v): detail %q carries %q", tc.err, w.Detail, f)
			}
		}
	}
	// The proxy's own errors keep their detail.
	if w := toWire(fmt.Errorf("%w: %q", errNameInvalid, "Bad"), resourceManifest); !strings.Contains(w.Detail, "Bad") {
		t.Errorf("own detail lost: %q", w.Detail)
	}
	if w := toWire(errors.New("x"), resourceManifest); w.Detail != "x" {
		t.Errorf("detail %q", w.Detail)
	}
}
