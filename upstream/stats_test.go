package upstream

import (
	"net/http"
	"testing"
	"time"
)

func TestParseRateLimitHeader(t *testing.T) {
	for _, tc := range []struct {
		in     string
		n      int
		window time.Duration
		ok     bool
	}{
		{"100;w=21600", 100, 6 * time.Hour, true},
		{" 76 ; w=21600", 76, 6 * time.Hour, true},
		{"0;w=21600", 0, 6 * time.Hour, true},
		{"200", 200, 0, true},
		{"", 0, 0, false},
		{"-1;w=5", 0, 0, false},
		{"many;w=5", 0, 0, false},
		{"5;w=x", 5, 0, true},
	} {
		n, w, ok := parseRateLimitHeader(tc.in)
		if n != tc.n || w != tc.window || ok != tc.ok {
			t.Errorf("parseRateLimitHeader(%q) = %d, %v, %v; want %d, %v, %v", tc.in, n, w, ok, tc.n, tc.window, tc.ok)
		}
	}
	var s stats
	s.sawResponse(http.Header{"Ratelimit-Limit": {"100;w=21600"}}, time.Unix(1, 0))
	if s.HasRateLimit {
		t.Error("a limit without a remaining count was recorded")
	}
	s.sawResponse(http.Header{"Ratelimit-Limit": {"100;w=21600"}, "Ratelimit-Remaining": {"42;w=21600"}}, time.Unix(1, 0))
	if !s.HasRateLimit || s.RateLimit != (RateLimit{Limit: 100, Remaining: 42, Window: 6 * time.Hour, At: time.Unix(1, 0)}) {
		t.Errorf("recorded %+v", s.Stats)
	}
}
