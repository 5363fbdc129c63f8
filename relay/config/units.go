package config

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// sizeUnit returns the multiplier of a lower-cased size suffix. Decimal
// (KB) and binary (KiB) units are both accepted and mean what they say;
// single letters ("K", "M") are not, because whether they mean 1000 or 1024
// would be a guess.
func sizeUnit(unit string) (int64, bool) {
	switch unit {
	case "", "b":
		return 1, true
	case "kb":
		return 1000, true
	case "mb":
		return 1000 * 1000, true
	case "gb":
		return 1000 * 1000 * 1000, true
	case "tb":
		return 1000 * 1000 * 1000 * 1000, true
	case "kib":
		return 1 << 10, true
	case "mib":
		return 1 << 20, true
	case "gib":
		return 1 << 30, true
	case "tib":
		return 1 << 40, true
	}
	return 0, false
}

// ParseSize parses a size in bytes: a plain number ("1024"), or a number
// with a unit, decimal (B, KB, MB, GB, TB) or binary (KiB, MiB, GiB, TiB),
// case-insensitive, with an optional space ("25MiB", "10 MB", "1.5GiB").
// Fractional results are rounded down to whole bytes.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnit(unit)
	if !ok || num == "" || strings.Count(num, ".") > 1 || num[0] == '.' || num[len(num)-1] == '.' {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if !n.IsInt64() {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return n.Int64(), nil
}

// ParseDuration parses a duration as time.ParseDuration does ("90s",
// "1h30m"), plus a leading day count ("5d", "1d12h"), since queue lifetimes
// are naturally said in days. Negative durations are refused: no setting
// has a use for them.
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	var total time.Duration
	// time.ParseDuration knows no unit with a 'd' in it, so a 'd' can only
	// be the day unit, and it must come first.
	if i := strings.IndexByte(t, 'd'); i >= 0 {
		days := t[:i]
		if days == "" || strings.Count(days, ".") > 1 || strings.Trim(days, "0123456789.") != "" ||
			days[0] == '.' || days[len(days)-1] == '.' {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		n, err := strconv.ParseFloat(days, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		if n*float64(24*time.Hour) >= math.MaxInt64 {
			return 0, fmt.Errorf("invalid duration %q: too large", s)
		}
		total = time.Duration(n * float64(24*time.Hour))
		t = t[i+1:]
		if t == "" {
			return total, nil
		}
		if t[0] == '-' || t[0] == '+' {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("invalid duration %q: must not be negative", s)
	}
	if total > math.MaxInt64-d {
		return 0, fmt.Errorf("invalid duration %q: too large", s)
	}
	return total + d, nil
}
