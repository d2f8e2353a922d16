package testpull

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

const metricsPage = `# HELP regmirror_access_denied_total Refused requests.
# TYPE regmirror_access_denied_total counter
regmirror_access_denied_total{reason="denied"} 3
regmirror_access_denied_total{reason="denied_too"} 5
regmirror_access_denied_total{reason="unauthenticated"} 7
# HELP go_gc_duration_seconds GC pauses.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0.5"} 0.001
go_gc_duration_seconds_sum 0.25
go_gc_duration_seconds_count 12
# HELP regmirror_request_duration_seconds Request durations.
# TYPE regmirror_request_duration_seconds histogram
regmirror_request_duration_seconds_bucket{route="blob",le="1"} 4
regmirror_request_duration_seconds_bucket{route="blob",le="+Inf"} 4
regmirror_request_duration_seconds_sum{route="blob"} 2.5
regmirror_request_duration_seconds_count{route="blob"} 4
# HELP regmirror_up Up.
# TYPE regmirror_up gauge
regmirror_up 1
`

// TestMetricSum: families, exact label matches (not prefixes), a summary's
// and a histogram's _count and _sum, and a family that is not there.
func TestMetricSum(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(metricsPage))
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
		found  bool
	}{
		{"regmirror_access_denied_total", nil, 15, true},
		{"regmirror_access_denied_total", []string{"reason", "denied"}, 3, true},
		{"regmirror_access_denied_total", []string{"reason", "other"}, 0, false},
		{"go_gc_duration_seconds_count", nil, 12, true},
		{"go_gc_duration_seconds_sum", nil, 0.25, true},
		{"regmirror_request_duration_seconds_count", []string{"route", "blob"}, 4, true},
		{"regmirror_request_duration_seconds_sum", nil, 2.5, true},
		{"regmirror_up", nil, 1, true},
		{"regmirror_missing_total", nil, 0, false},
	} {
		got, found := MetricSum(t, srv.URL, tc.name, tc.labels...)
		if got != tc.want || found != tc.found {
			t.Errorf("MetricSum(%s, %v) = %v, %v; want %v, %v", tc.name, tc.labels, got, found, tc.want, tc.found)
		}
	}
	if got := Metric(t, srv.URL, "regmirror_access_denied_total"); got != 15 {
		t.Errorf("Metric = %v, want 15", got)
	}
}
