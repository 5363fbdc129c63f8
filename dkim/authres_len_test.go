package dkim

import (
	"strings"
	"testing"
)

// TestAuthenticationResultsLineLength: however long the values a
// signature brings, no line of the field is over 998 octets (RFC 5322
// §2.1.1), unfolding gives each verdict back unchanged, and a value no
// domain or selector can have (over 255 octets) is left out.
func TestAuthenticationResultsLineLength(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n-5) + ".test" }
	rs := []Result{
		{Status: PermError, Domain: long(255), Selector: long(255), Identifier: "@" + long(254), Algorithm: "rsa-sha256", SignaturePrefix: "AAAAAAAA", Reason: strings.Repeat("why ", 60)},
		{Status: Fail, Domain: long(900), Selector: "s1", Reason: "x"},
	}
	field := AuthenticationResults("c.test", rs)
	for _, l := range strings.Split(strings.TrimSuffix(field, "\r\n"), "\r\n") {
		if len(l) > 998 {
			t.Errorf("a line of %d octets:\n%s", len(l), l)
		}
	}
	unfolded := strings.ReplaceAll(field, "\r\n ", " ")
	for _, r := range rs {
		if !strings.Contains(unfolded, r.String()) {
			t.Errorf("unfolded field lacks %q", r.String())
		}
	}
	if strings.Contains(rs[1].String(), long(900)) || !strings.Contains(rs[1].String(), "header.s=s1") {
		t.Errorf("a 900-octet domain is shown: %q", rs[1].String())
	}
	if !strings.Contains(field, "\r\n ") {
		t.Errorf("the first verdict (about 1,100 octets) was not folded:\n%s", field)
	}
}
