package envelope

import (
	"strings"
	"testing"
)

func mustForward(t *testing.T, s string) Path {
	t.Helper()
	p, err := ParseForwardPath(s, true)
	if err != nil {
		t.Fatalf("ParseForwardPath(%q): %v", s, err)
	}
	return p
}

func TestPercentHack(t *testing.T) {
	longRoute := "<" + strings.Repeat("@h,", 15) + "@h:a%d@b>"
	tests := []struct {
		in   string
		want string // "" means not applied
	}{
		{"<a%d@b>", "<@b:a@d>"},
		{"<a%c%d@b>", "<@b:a%c@d>"},
		{"<a%d@[192.0.2.1]>", "<@[192.0.2.1]:a@d>"},
		{`<"a%[192.0.2.1]"@b>`, "<@b:a@[192.0.2.1]>"},
		{`<"a b%d"@b>`, `<@b:"a b"@d>`},
		{"<a.%d@b>", `<@b:"a."@d>`},
		{"<jö%bücher.de@b>", "<@b:jö@bücher.de>"},
		{"<@r:a%d@b>", "<@b,@r:a@d>"}, // existing route kept after the new host
		{"<@r,@s:a%d.e@b>", "<@b,@r,@s:a@d.e>"},
		{"<a@b>", ""},               // no '%'
		{"<a%@b>", ""},              // empty domain after '%'
		{`<"a%d."@b>`, ""},          // invalid domain after '%'
		{"<a%d_e@b>", ""},           // invalid domain after '%'
		{`<"a%[300.0.0.1]"@b>`, ""}, // invalid literal after '%'
		{"<%d@b>", ""},              // nothing before '%'
		{`<"a%d e"@b>`, ""},         // space in the would-be domain
		{"<postmaster>", ""},
		{longRoute, ""}, // would need 17 route hosts
	}
	for _, tc := range tests {
		p := mustForward(t, tc.in)
		q, ok := p.PercentHack()
		if tc.want == "" {
			if ok || !samePath(p, q) {
				t.Errorf("PercentHack(%q) = %q, %v; want unchanged, false", tc.in, q, ok)
			}
			continue
		}
		if !ok || q.String() != tc.want {
			t.Errorf("PercentHack(%q) = %q, %v; want %q", tc.in, q, ok, tc.want)
			continue
		}
		r, err := ParseForwardPath(q.String(), true)
		if err != nil || !samePath(r, q) {
			t.Errorf("PercentHack(%q) = %q does not reparse: %v", tc.in, q, err)
		}
	}
	// Growing by one octet must not push a path over MaxPathLen.
	local := strings.Repeat("l", 62) + "%d"
	p := mustForward(t, "<"+local+"@"+makeDomain(256-len(local)-3)+">")
	if len(p.String()) != MaxPathLen {
		t.Fatalf("setup: %d", len(p.String()))
	}
	if q, ok := p.PercentHack(); ok {
		t.Errorf("PercentHack gave %d-octet path %q", len(q.String()), q)
	}
}

func TestPercentHackDoesNotAlias(t *testing.T) {
	p := mustForward(t, "<@r,@s:a%d@b>")
	q, _ := p.PercentHack()
	q.Route[1] = "changed"
	if p.Route[0] != "r" {
		t.Fatalf("PercentHack result shares Route with p")
	}
}

func TestNextHop(t *testing.T) {
	tests := []struct{ in, want string }{
		{"<a@b>", "b"},
		{"<@r:a@b>", "r"},
		{"<@[192.0.2.1],@s:a@b>", "[192.0.2.1]"},
		{"<postmaster>", ""},
	}
	for _, tc := range tests {
		if got := mustForward(t, tc.in).NextHop(); got != tc.want {
			t.Errorf("NextHop(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := (Path{}).NextHop(); got != "" {
		t.Errorf("NextHop(<>) = %q", got)
	}
}

func TestStripFirstHop(t *testing.T) {
	tests := []struct{ in, want string }{
		{"<@b,@c:user@d>", "<@c:user@d>"},
		{"<@c:user@d>", "<user@d>"},
		{"<user@d>", "<user@d>"},
		{"<postmaster>", "<postmaster>"},
		{"<@[192.0.2.1],@[IPv6:::1],@e:u@d>", "<@[IPv6:::1],@e:u@d>"},
	}
	for _, tc := range tests {
		p := mustForward(t, tc.in)
		q := p.StripFirstHop()
		if q.String() != tc.want {
			t.Errorf("StripFirstHop(%q) = %q, want %q", tc.in, q, tc.want)
		}
		if len(q.Route) == 0 && q.Route != nil {
			t.Errorf("StripFirstHop(%q): empty non-nil Route", tc.in)
		}
		if p.String() != tc.in {
			t.Errorf("StripFirstHop changed its receiver to %q", p)
		}
	}
	// The result owns its route.
	p := mustForward(t, "<@b,@c,@e:user@d>")
	q := p.StripFirstHop()
	q.Route[0] = "x"
	if p.Route[1] != "c" {
		t.Fatalf("StripFirstHop result shares Route with p")
	}
	// Following a whole route hop by hop ends at the mailbox.
	p = mustForward(t, "<@b,@c:user@d>")
	var hops []string
	for len(p.Route) > 0 {
		hops = append(hops, p.NextHop())
		p = p.StripFirstHop()
	}
	hops = append(hops, p.NextHop())
	if strings.Join(hops, " ") != "b c d" || p.String() != "<user@d>" {
		t.Fatalf("hops %v, final %q", hops, p)
	}
}

func TestWithoutRoute(t *testing.T) {
	tests := []struct{ in, want string }{
		{"<@b,@c:user@d>", "<user@d>"},
		{`<@b:"a b"@d>`, `<"a b"@d>`},
		{"<user@d>", "<user@d>"},
		{"<postmaster>", "<postmaster>"},
	}
	for _, tc := range tests {
		p := mustForward(t, tc.in)
		q := p.WithoutRoute()
		if q.String() != tc.want || q.Route != nil {
			t.Errorf("WithoutRoute(%q) = %q (%#v), want %q", tc.in, q, q.Route, tc.want)
		}
	}
}

func TestCollapseRoute(t *testing.T) {
	for in, want := range map[string]string{
		"<@a,@a:u@d>":                 "<@a:u@d>",
		"<@a,@A,@b,@b,@a:u@d>":        "<@a,@b,@a:u@d>",
		"<@a,@b:u@d>":                 "<@a,@b:u@d>",
		"<u@d>":                       "<u@d>",
		"<@[1.2.3.4],@[1.2.3.4]:u@d>": "<@[1.2.3.4]:u@d>",
	} {
		p, err := ParseForwardPath(in, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.CollapseRoute().String(); got != want {
			t.Errorf("CollapseRoute(%s) = %s, want %s", in, got, want)
		}
	}
}
