package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/regmirror/regmirror/cache"
	"github.com/regmirror/regmirror/upstream"
)

func TestToWire(t *testing.T) {
	tests := []struct {
		err    error
		res    resource
		status int
		code   string
	}{
		{fmt.Errorf("%w: x", errNameInvalid), resourceManifest, 400, "NAME_INVALID"},
		{fmt.Errorf("%w: x", errDigestInvalid), resourceBlob, 400, "DIGEST_INVALID"},
		{cache.ErrInvalidDigest, resourceBlob, 400, "DIGEST_INVALID"},
		{errReferenceInvalid, resourceManifest, 400, "MANIFEST_INVALID"},
		{errUnsupportedMethod, resourceNone, 405, "UNSUPPORTED"},
		{errRegistryNotAllowed, resourceManifest, 403, "DENIED"},
		{errOffline, resourceManifest, 404, "MANIFEST_UNKNOWN"},
		{errOffline, resourceBlob, 404, "BLOB_UNKNOWN"},
		{fmt.Errorf("wrapped: %w", upstream.ErrNotFound), resourceRepository, 404, "NAME_UNKNOWN"},
		{upstream.ErrNotFound, resourceBlob, 404, "BLOB_UNKNOWN"},
		{upstream.ErrUnauthorized, resourceManifest, 401, "UNAUTHORIZED"},
		{upstream.ErrDenied, resourceManifest, 403, "DENIED"},
		{&upstream.RateLimitError{RetryAfter: 7 * time.Second}, resourceManifest, 429, "TOOMANYREQUESTS"},
		{upstream.ErrUnavailable, resourceBlob, 503, "UNAVAILABLE"},
		{cache.ErrDigestMismatch, resourceBlob, 502, "UNAVAILABLE"},
		{errUpstreamCorrupt, resourceManifest, 502, "UNAVAILABLE"},
		{upstream.ErrTooLarge, resourceManifest, 502, "MANIFEST_INVALID"},
		{errors.New("something else"), resourceManifest, 500, "UNKNOWN"},
	}
	for _, tt := range tests {
		w := toWire(tt.err, tt.res)
		if w.Status != tt.status || w.Code != tt.code {
			t.Errorf("toWire(%v) = %d %s, want %d %s", tt.err, w.Status, w.Code, tt.status, tt.code)
		}
		if w.Detail == "" || w.Message == "" {
			t.Errorf("toWire(%v) lacks a message or detail", tt.err)
		}
		if tt.status == http.StatusTooManyRequests && w.RetryAfter != 7*time.Second {
			t.Errorf("Retry-After lost: %v", w.RetryAfter)
		}
	}
}
