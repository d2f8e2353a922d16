package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
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
		// Timeouts are 504 whatever wraps them, not 500 (issue 8).
		{fmt.Errorf("upstream: manifest: %w", context.DeadlineExceeded), resourceManifest, 504, "UNAVAILABLE"},
		{fmt.Errorf("%w: GET: %w", upstream.ErrUnavailable, &url.Error{Op: "Get", URL: "http://x", Err: timeoutErr{}}), resourceBlob, 504, "UNAVAILABLE"},
		{fmt.Errorf("%w: read: %w", upstream.ErrUnavailable, os.ErrDeadlineExceeded), resourceBlob, 504, "UNAVAILABLE"},
		{fmt.Errorf("fill: %w", context.Canceled), resourceBlob, 503, "UNAVAILABLE"},
		{fmt.Errorf("%w: x", upstream.ErrInvalidName), resourceManifest, 400, "NAME_INVALID"},
		{fmt.Errorf("%w: bytes=5-1", errRangeInvalid), resourceBlob, 416, "RANGE_INVALID"},
		{errRangeNotSatisfiable, resourceBlob, 416, "RANGE_INVALID"},
		{errPanic, resourceNone, 500, "UNKNOWN"},
		{errHeaderTooLarge, resourceNone, 431, "UNSUPPORTED"},
		{errRequestMalformed, resourceNone, 400, "UNSUPPORTED"},
		{errBodyTooLarge, resourceNone, 413, "UNSUPPORTED"},
		{errRequestTimeout, resourceNone, 408, "UNSUPPORTED"},
		{errTooManyConnections, resourceNone, 503, "UNAVAILABLE"},
		{errTooManyConnectionsPerIP, resourceNone, 429, "TOOMANYREQUESTS"},
	}
	for _, tt := range tests {
		w := toWire(tt.err, tt.res)
		if w.Status != tt.status || w.Code != tt.code {
			t.Errorf("toWire(%v) = %d %s, want %d %s", tt.err, w.Status, w.Code, tt.status, tt.code)
		}
		if w.Detail == "" || w.Message == "" {
			t.Errorf("toWire(%v) lacks a message or detail", tt.err)
		}
		var rl *upstream.RateLimitError
		if errors.As(tt.err, &rl) && w.RetryAfter != 7*time.Second {
			t.Errorf("Retry-After lost: %v", w.RetryAfter)
		}
	}
}

// timeoutErr is a network timeout, as net.Error says it.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }
