package admin

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestClientErrorsSayTheirKindOnce: a server's error reaches the command
// as the server said it, matching its sentinel, without repeating it
// ("admin: not in the cache (admin: not in the cache: …)" before).
func TestClientErrorsSayTheirKindOnce(t *testing.T) {
	for _, tc := range []struct {
		body     string
		sentinel error
		want     string
	}{
		{`{"error":"admin: not in the cache: ghcr.io/org/app:v2","kind":"not_cached"}`, ErrNotCached, "admin: not in the cache: ghcr.io/org/app:v2"},
		{`{"error":"admin: no such pin: x","kind":"no_such_pin"}`, ErrNoSuchPin, "admin: no such pin: x"},
		{`{"error":"management requests need the token","kind":"unauthorized"}`, ErrUnauthorized, "admin: not authorized: management requests need the token"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(tc.body))
		}))
		_, err := NewClient(srv.URL, "t").PinRef(t.Context(), "ghcr.io/org/app:v2")
		srv.Close()
		if !errors.Is(err, tc.sentinel) {
			t.Errorf("%s: %v, want errors.Is %v", tc.body, err, tc.sentinel)
			continue
		}
		if err.Error() != tc.want || strings.Count(err.Error(), tc.sentinel.Error()) != 1 {
			t.Errorf("error text %q, want %q", err, tc.want)
		}
	}
}
