package proxy

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	const max = "9223372036854775807" // math.MaxInt64
	tests := []struct {
		header     string
		size       int64
		start, end int64
		whole      bool
		err        error
	}{
		{"", 1000, 0, 0, true, nil},
		{"bytes=0-99", 1000, 0, 100, false, nil},
		{"bytes=100-", 1000, 100, 1000, false, nil},
		{"bytes=0-", 1000, 0, 1000, false, nil},
		{"bytes=900-2000", 1000, 900, 1000, false, nil},
		{"bytes=-100", 1000, 900, 1000, false, nil},
		{"bytes=-5000", 1000, 0, 1000, false, nil},
		{" bytes = 5 - 9 ", 1000, 5, 10, false, nil},
		{"BYTES=5-9", 1000, 5, 10, false, nil},
		// The crash and bogus length: the end overflowed.
		{"bytes=0-" + max, 1000, 0, 1000, false, nil},
		{"bytes=1-" + max, 1000, 1, 1000, false, nil},
		{"bytes=" + max + "-" + max, 1000, 0, 0, false, errRangeNotSatisfiable},
		{"bytes=-" + max, 1000, 0, 1000, false, nil},
		{"bytes=0-" + max, math.MaxInt64, 0, math.MaxInt64, false, nil},
		{"bytes=0-9223372036854775808", 1000, 0, 0, false, errRangeInvalid},
		{"bytes=-9223372036854775808", 1000, 0, 0, false, errRangeInvalid},
		// Unsatisfiable.
		{"bytes=1000-", 1000, 0, 0, false, errRangeNotSatisfiable},
		{"bytes=1000-1001", 1000, 0, 0, false, errRangeNotSatisfiable},
		{"bytes=-0", 1000, 0, 0, false, errRangeNotSatisfiable},
		{"bytes=0-", 0, 0, 0, false, errRangeNotSatisfiable},
		{"bytes=-1", 0, 0, 0, false, errRangeNotSatisfiable},
		{"bytes=2000-3000,5000-", 1000, 0, 0, false, errRangeNotSatisfiable},
		// Malformed bytes ranges: 416, as net/http.
		{"bytes=5-1", 1000, 0, 0, false, errRangeInvalid},
		{"bytes=a-b", 1000, 0, 0, false, errRangeInvalid},
		{"bytes=-", 1000, 0, 0, false, errRangeInvalid},
		{"bytes=", 1000, 0, 0, false, errRangeInvalid},
		{"bytes=,", 1000, 0, 0, false, errRangeInvalid},
		{"bytes=5", 1000, 0, 0, false, errRangeInvalid},
		{"bytes=+5-6", 1000, 0, 0, false, errRangeInvalid},
		{"bytes=--5", 1000, 0, 0, false, errRangeInvalid},
		{"bytes=-5-", 1000, 0, 0, false, errRangeInvalid},
		{"bytes=0x10-", 1000, 0, 0, false, errRangeInvalid},
		{"bytes", 1000, 0, 0, false, errRangeInvalid},
		// Another unit is ignored: the whole body.
		{"items=0-1", 1000, 0, 0, true, nil},
		// Several ranges: the whole body, unless only one overlaps.
		{"bytes=0-1,5-6", 1000, 0, 0, true, nil},
		{"bytes=0-1,5000-6000", 1000, 0, 2, false, nil},
		{"bytes=0-1, ,", 1000, 0, 2, false, nil},
	}
	for _, tt := range tests {
		got, err := parseRange(tt.header, tt.size)
		if !errors.Is(err, tt.err) {
			t.Errorf("parseRange(%q, %d) err = %v, want %v", tt.header, tt.size, err, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		if tt.whole {
			if got != nil {
				t.Errorf("parseRange(%q) = %+v, want the whole body", tt.header, got)
			}
			continue
		}
		if got == nil || got.start != tt.start || got.end != tt.end {
			t.Errorf("parseRange(%q, %d) = %+v, want [%d,%d)", tt.header, tt.size, got, tt.start, tt.end)
		}
	}
	if _, err := parseRange("bytes="+strings.Repeat("0-0,", maxRanges+1), 1000); !errors.Is(err, errRangeInvalid) {
		t.Errorf("%d ranges: err = %v, want errRangeInvalid", maxRanges+1, err)
	}
}

// FuzzParseRange: whatever the header and size, a range is inside the
// body and not empty, so its length (what goes into Content-Length and the
// served-bytes counter) is positive and at most the size; the seeds include
// the overflowing ends of issue 8.
func FuzzParseRange(f *testing.F) {
	f.Add("bytes=0-99", int64(1000))
	f.Add("bytes=-5", int64(10))
	f.Add("bytes=0-9223372036854775807", int64(1000))
	f.Add("bytes=1-9223372036854775807", int64(1000))
	f.Add("bytes=9223372036854775806-9223372036854775807", int64(math.MaxInt64))
	f.Add("bytes=-9223372036854775807", int64(1))
	f.Add("bytes=0-1,3-4", int64(10))
	f.Add("bytes=5-1", int64(10))
	f.Fuzz(func(t *testing.T, header string, size int64) {
		if size < 0 {
			return
		}
		r, err := parseRange(header, size)
		if err != nil {
			if r != nil {
				t.Fatalf("parseRange(%q, %d) = %+v with error %v", header, size, r, err)
			}
			return
		}
		if r == nil {
			return
		}
		n := r.end - r.start
		if r.start < 0 || r.end > size || n <= 0 || n > size {
			t.Fatalf("parseRange(%q, %d) = %+v: out of bounds", header, size, r)
		}
	})
}
