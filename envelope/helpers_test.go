package envelope

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// sentinels lists every error the package may wrap.
var sentinels = []error{ErrSyntax, ErrTooLong, ErrNeedUTF8, ErrParamSyntax, ErrParamDup, ErrParamUnknown}

// checkErr fails t unless err wraps want and no other sentinel, and its
// message starts with the package prefix and carries no line breaks.
func checkErr(t *testing.T, input string, err, want error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%q: got no error, want %v", input, want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("%q: got %v, want it to wrap %v", input, err, want)
	}
	for _, s := range sentinels {
		if s != want && errors.Is(err, s) {
			t.Fatalf("%q: %v also wraps %v", input, err, s)
		}
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "envelope: ") || hasNonASCII(msg) || hasControl(msg) {
		t.Fatalf("%q: bad error text %q", input, msg)
	}
}

// onlyOneSentinel reports whether err wraps exactly one sentinel.
func onlyOneSentinel(err error) bool {
	n := 0
	for _, s := range sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	return n == 1
}

// samePath compares paths treating a nil and an empty Route alike.
func samePath(a, b Path) bool {
	if len(a.Route) == 0 {
		a.Route = nil
	}
	if len(b.Route) == 0 {
		b.Route = nil
	}
	return reflect.DeepEqual(a, b)
}

// makeDomain returns a valid ASCII domain of exactly n octets (n >= 1).
func makeDomain(n int) string {
	var b strings.Builder
	for b.Len() < n {
		left := n - b.Len()
		if b.Len() > 0 {
			b.WriteByte('.')
			left--
		}
		l := min(left, 63)
		if left-l == 1 { // never leave a single octet for a ".x" that won't fit
			l--
		}
		b.WriteString(strings.Repeat("d", l))
	}
	return b.String()
}
