package eviction

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: " 42 ", want: 42},
		{in: "512B", want: 512},
		{in: "500MB", want: 500_000_000},
		{in: "500mb", want: 500_000_000},
		{in: "200GiB", want: 200 << 30},
		{in: "200 GiB", want: 200 << 30},
		{in: "1.5T", want: 1_500_000_000_000},
		{in: "1.5Ti", want: 3 << 39},
		{in: "2K", want: 2000},
		{in: "1,000", want: 1000},
		{in: "8EiB", wantErr: "too large"},
		{in: "", wantErr: "empty"},
		{in: "   ", wantErr: "empty"},
		{in: "-1", wantErr: "negative"},
		{in: "-5GiB", wantErr: "negative"},
		{in: "GiB", wantErr: "does not start with a number"},
		{in: "abc", wantErr: "does not start with a number"},
		{in: "12 parsecs", wantErr: "unhandled size name"},
		{in: "1.2.3G", wantErr: "want a number of bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSize(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseBudget(t *testing.T) {
	const fs = 1_000_000_000_000 // 1 TB filesystem
	tests := []struct {
		in      string
		fsTotal int64
		want    int64
		wantErr string
	}{
		{in: "200GiB", fsTotal: fs, want: 200 << 30},
		{in: "500MB", fsTotal: 0, want: 500_000_000},
		{in: "1.5T", fsTotal: 0, want: 1_500_000_000_000},
		{in: "123456", fsTotal: 0, want: 123456},
		{in: "80%", fsTotal: fs, want: 800_000_000_000},
		{in: " 12.5 % ", fsTotal: fs, want: 125_000_000_000},
		{in: "100%", fsTotal: fs, want: fs},
		{in: "0%", fsTotal: fs, wantErr: "outside"},
		{in: "120%", fsTotal: fs, wantErr: "outside"},
		{in: "-5%", fsTotal: fs, wantErr: "outside"},
		{in: "abc%", fsTotal: fs, wantErr: "not a percentage"},
		{in: "NaN%", fsTotal: fs, wantErr: "not a percentage"},
		{in: "%", fsTotal: fs, wantErr: "not a percentage"},
		{in: "80%", fsTotal: 0, wantErr: "filesystem size is unknown"},
		{in: "0", fsTotal: fs, wantErr: "more than zero"},
		{in: "0GiB", fsTotal: fs, wantErr: "more than zero"},
		{in: "", fsTotal: fs, wantErr: "empty"},
		{in: "lots", fsTotal: fs, wantErr: "does not start with a number"},
		{in: "-1G", fsTotal: fs, wantErr: "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseBudget(tt.in, tt.fsTotal)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseBudget(%q, %d) = %d, %v; want error containing %q", tt.in, tt.fsTotal, got, err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "cache.max_size: ") {
					t.Fatalf("error %q does not name the config key", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseBudget(%q, %d) = %d, %v; want %d", tt.in, tt.fsTotal, got, err, tt.want)
			}
		})
	}
}

// FuzzParseBudget: never panics, and a nil error means a positive budget.
func FuzzParseBudget(f *testing.F) {
	for _, s := range []string{"200GiB", "500MB", "1.5T", "80%", "0", "-1", "1e400", "%", "9999999999999999999999"} {
		f.Add(s, int64(1)<<40)
	}
	f.Fuzz(func(t *testing.T, s string, fsTotal int64) {
		n, err := ParseBudget(s, fsTotal)
		if err == nil && n <= 0 {
			t.Fatalf("ParseBudget(%q, %d) = %d without error", s, fsTotal, n)
		}
		if m, err := ParseSize(s); err == nil && m < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, m)
		}
	})
}

func TestCapMinFree(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		minFree, total, want int64
		capped               bool
	}{
		{gib, 100 * gib, gib, false},     // the default on a real disk
		{gib, 10 * gib, gib, false},      // exactly the share
		{gib, 512 << 20, 53687091, true}, // a 512 MiB volume keeps 10%
		{gib, 64 << 20, 6710886, true},   // a 64 MiB tmpfs
		{0, 64 << 20, 0, false},          // off stays off
		{gib, 0, gib, false},             // size unknown
		{50 * gib, 200 * gib, 20 * gib, true},
	} {
		got, capped := CapMinFree(tc.minFree, tc.total)
		if got != tc.want || capped != tc.capped {
			t.Errorf("CapMinFree(%d, %d) = %d, %v; want %d, %v", tc.minFree, tc.total, got, capped, tc.want, tc.capped)
		}
	}
}
