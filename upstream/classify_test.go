package upstream

import (
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// TestClassifyStatus: only what can be the trouble of upstream, or of the
// way there, is ErrUnavailable (an outage: cached content is served stale
// and the registry marked out); another 4xx refuses that one request.
func TestClassifyStatus(t *testing.T) {
	for status, want := range map[int]error{
		http.StatusBadRequest:                   ErrBadRequest,
		http.StatusMethodNotAllowed:             ErrBadRequest,
		http.StatusGone:                         ErrBadRequest,
		http.StatusRequestedRangeNotSatisfiable: ErrBadRequest,
		http.StatusProxyAuthRequired:            ErrUnavailable, // an egress proxy
		http.StatusRequestTimeout:               ErrUnavailable,
		http.StatusTooManyRequests:              ErrRateLimited,
		http.StatusNotFound:                     ErrNotFound,
		http.StatusUnauthorized:                 ErrUnauthorized,
		http.StatusForbidden:                    ErrDenied,
		http.StatusBadGateway:                   ErrUnavailable,
	} {
		if got := classifyStatus(&transport.Error{StatusCode: status}); !errors.Is(got, want) {
			t.Errorf("%d: %v, want %v", status, got, want)
		}
	}
}
