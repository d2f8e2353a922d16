package eviction

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
)

// ParseSize reads a byte count: plain bytes ("1048576") or a human size as
// go-humanize reads it, case-insensitive: binary units with an i ("512MiB",
// "200GiB", "1.5Ti") and decimal units without ("500MB", "1.5T" is 1.5×10^12).
// Fractions of a byte are dropped. Negative sizes and sizes above
// math.MaxInt64 are errors.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, errors.New("empty size")
	}
	if t[0] == '-' {
		return 0, fmt.Errorf("size %q is negative", s)
	}
	if c := t[0]; (c < '0' || c > '9') && c != '.' {
		return 0, fmt.Errorf("size %q does not start with a number", s)
	}
	n, err := humanize.ParseBytes(t)
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number of bytes or a size like 500MB or 200GiB: %w", s, err)
	}
	if n > math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(n), nil
}

// ParseBudget reads the cache byte budget (config key cache.max_size): a size
// as [ParseSize] reads it, or a percentage of the cache filesystem's total
// size fsTotal ("80%", 0 < p ≤ 100). The budget must be positive. Errors start
// with "cache.max_size: ".
func ParseBudget(s string, fsTotal int64) (int64, error) {
	t := strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(t, "%"); ok {
		p = strings.TrimSpace(p)
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("cache.max_size: %q is not a percentage", s)
		}
		if f <= 0 || f > 100 {
			return 0, fmt.Errorf("cache.max_size: %q is outside (0%%, 100%%]", s)
		}
		if fsTotal <= 0 {
			return 0, fmt.Errorf("cache.max_size: %q is a percentage, but the filesystem size is unknown", s)
		}
		r := float64(fsTotal) * f / 100
		if r >= float64(fsTotal) { // 100%, and no float overflow near MaxInt64
			return fsTotal, nil
		}
		n := int64(r)
		if n <= 0 {
			return 0, fmt.Errorf("cache.max_size: %q of %d bytes is zero", s, fsTotal)
		}
		return n, nil
	}
	n, err := ParseSize(t)
	if err != nil {
		return 0, fmt.Errorf("cache.max_size: %w", err)
	}
	if n <= 0 {
		return 0, fmt.Errorf("cache.max_size: %q: the budget must be more than zero bytes", s)
	}
	return n, nil
}

// MinFreeShare is the largest share of the cache filesystem that min_free
// may keep free: see [CapMinFree].
const MinFreeShare = 0.10

// CapMinFree returns the min_free that eviction applies by default on a filesystem
// of fsTotal bytes: minFree, or MinFreeShare of the filesystem if that is
// less, and whether it was capped. Without the cap the default 1 GiB on a
// filesystem of 1 GiB or less (a small volume, a tmpfs) could never be
// met, and every pass would evict everything. An unknown size (fsTotal ≤ 0)
// leaves minFree as it is.
func CapMinFree(minFree, fsTotal int64) (int64, bool) {
	if fsTotal <= 0 {
		return minFree, false
	}
	limit := int64(float64(fsTotal) * MinFreeShare)
	if minFree > limit {
		return limit, true
	}
	return minFree, false
}
