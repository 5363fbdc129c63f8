package deliver

import "testing"

// TestHandoffHeader: the origin travels with the hop token, and a message
// that entered here names only this relay, as earlier versions did.
func TestHandoffHeader(t *testing.T) {
	for _, c := range []struct{ origin, want, wantOrigin, wantHop string }{
		{"", "X-Relay-Handoff: a.test 001X\r\n", "a.test 001X", "a.test 001X"},
		{"a.test 001X", "X-Relay-Handoff: a.test 001X\r\n", "a.test 001X", "a.test 001X"},
		{"s.test 001S", "X-Relay-Handoff: s.test 001S via a.test 001X\r\n", "s.test 001S", "a.test 001X"},
	} {
		got := string(HandoffHeader("a.test", "001X", c.origin))
		if got != c.want {
			t.Errorf("HandoffHeader(origin %q) = %q, want %q", c.origin, got, c.want)
		}
		origin, hop := ParseHandoff(got[len(HandoffField) : len(got)-2])
		if origin != c.wantOrigin || hop != c.wantHop {
			t.Errorf("ParseHandoff(%q) = %q, %q", got, origin, hop)
		}
	}
	if got := string(HandoffHeader("a/b\r\n", "1", "")); got != "X-Relay-Handoff: a?b?? 1\r\n" {
		t.Errorf("unsafe hostname: %q", got)
	}
}
