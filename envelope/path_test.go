package envelope

import (
	"strings"
	"testing"
)

type pathCase struct {
	name string
	in   string
	utf8 bool
	want Path   // when err == nil
	str  string // expected String(); "" means in
	err  error
}

// commonPathCases hold for both parsers.
func commonPathCases() []pathCase {
	local64 := strings.Repeat("l", 64)
	local65 := strings.Repeat("l", 65)
	q64 := `"` + strings.Repeat("q", 62) + `"`
	q65 := `"` + strings.Repeat("q", 63) + `"`
	// "<" + 64 + "@" + d + ">" = 256 → d has 189 octets.
	d189 := makeDomain(189)
	d190 := makeDomain(190)
	label63 := strings.Repeat("x", 63)
	label64 := strings.Repeat("x", 64)
	route16 := strings.Repeat("@h,", 15) + "@h:"
	route17 := strings.Repeat("@h,", 16) + "@h:"
	hosts16 := make([]string, 16)
	for i := range hosts16 {
		hosts16[i] = "h"
	}
	return []pathCase{
		// Dot-strings and domains.
		{name: "simple", in: "<a@b>", want: Path{Local: "a", Domain: "b"}},
		{name: "dots", in: "<first.last@mail.example.com>", want: Path{Local: "first.last", Domain: "mail.example.com"}},
		{name: "atext", in: "<!#$%&'*+-/=?^_`{|}~@x.y>", want: Path{Local: "!#$%&'*+-/=?^_`{|}~", Domain: "x.y"}},
		{name: "case kept", in: "<Joe.Bloggs@Example.COM>", want: Path{Local: "Joe.Bloggs", Domain: "Example.COM"}},
		{name: "postmaster with domain", in: "<Postmaster@b.test>", want: Path{Local: "Postmaster", Domain: "b.test"}},
		{name: "hyphen domain", in: "<a@b-c.d-e>", want: Path{Local: "a", Domain: "b-c.d-e"}},
		{name: "numeric domain", in: "<a@1.2.3.4>", want: Path{Local: "a", Domain: "1.2.3.4"}},
		{name: "punycode", in: "<a@xn--bcher-kva.example>", want: Path{Local: "a", Domain: "xn--bcher-kva.example"}},
		{name: "label 63", in: "<a@" + label63 + ".b>", want: Path{Local: "a", Domain: label63 + ".b"}},

		// Quoted local parts.
		{name: "quoted space", in: `<"a b"@d>`, want: Path{Local: "a b", Domain: "d"}},
		{name: "quoted at", in: `<"a@b"@d>`, want: Path{Local: "a@b", Domain: "d"}},
		{name: "quoted percent", in: `<"a%b"@d>`, want: Path{Local: "a%b", Domain: "d"}, str: "<a%b@d>"},
		{name: "quoted backslash", in: `<"a\\b"@d>`, want: Path{Local: `a\b`, Domain: "d"}},
		{name: "quoted quote", in: `<"a\"b"@d>`, want: Path{Local: `a"b`, Domain: "d"}},
		{name: "quoted empty", in: `<""@d>`, want: Path{Local: "", Domain: "d"}},
		{name: "quoted needless", in: `<"abc"@d>`, want: Path{Local: "abc", Domain: "d"}, str: "<abc@d>"},
		{name: "quoted needless pair", in: `<"\a\ b"@d>`, want: Path{Local: "a b", Domain: "d"}, str: `<"a b"@d>`},
		{name: "quoted gt", in: `<"a>b"@d>`, want: Path{Local: "a>b", Domain: "d"}},
		{name: "quoted double dot", in: `<"a..b"@d>`, want: Path{Local: "a..b", Domain: "d"}},
		{name: "quoted trailing dot", in: `<"a."@d>`, want: Path{Local: "a.", Domain: "d"}},
		{name: "quoted lt comma colon", in: `<"<a>,b:c"@d>`, want: Path{Local: "<a>,b:c", Domain: "d"}},
		{name: "quoted only space", in: `<" "@d>`, want: Path{Local: " ", Domain: "d"}},

		// Address literals.
		{name: "ipv4", in: "<a@[192.0.2.1]>", want: Path{Local: "a", Domain: "[192.0.2.1]"}},
		{name: "ipv4 zero", in: "<a@[0.0.0.0]>", want: Path{Local: "a", Domain: "[0.0.0.0]"}},
		{name: "ipv4 max", in: "<a@[255.255.255.255]>", want: Path{Local: "a", Domain: "[255.255.255.255]"}},
		{name: "ipv6", in: "<a@[IPv6:2001:db8::1]>", want: Path{Local: "a", Domain: "[IPv6:2001:db8::1]"}},
		{name: "ipv6 tag case", in: "<a@[ipv6:::1]>", want: Path{Local: "a", Domain: "[ipv6:::1]"}},
		{name: "ipv6 full", in: "<a@[IPv6:2001:0db8:0000:0000:0000:0000:0000:0001]>", want: Path{Local: "a", Domain: "[IPv6:2001:0db8:0000:0000:0000:0000:0000:0001]"}},
		{name: "ipv6v4", in: "<a@[IPv6:::ffff:192.0.2.1]>", want: Path{Local: "a", Domain: "[IPv6:::ffff:192.0.2.1]"}},
		{name: "general", in: "<a@[x-tag:some:thing]>", want: Path{Local: "a", Domain: "[x-tag:some:thing]"}},

		// Source routes.
		{name: "route 1", in: "<@a.test:u@c.test>", want: Path{Route: []string{"a.test"}, Local: "u", Domain: "c.test"}},
		{name: "route 2", in: "<@a,@b:u@c>", want: Path{Route: []string{"a", "b"}, Local: "u", Domain: "c"}},
		{name: "route 3 literals", in: "<@[192.0.2.1],@b.test,@[IPv6:::1]:u@c>", want: Path{Route: []string{"[192.0.2.1]", "b.test", "[IPv6:::1]"}, Local: "u", Domain: "c"}},
		{name: "route general literal", in: "<@[x:a,b:c]:u@c>", want: Path{Route: []string{"[x:a,b:c]"}, Local: "u", Domain: "c"}},
		{name: "route quoted", in: `<@a:"x y"@c>`, want: Path{Route: []string{"a"}, Local: "x y", Domain: "c"}},
		{name: "route 16", in: "<" + route16 + "u@c>", want: Path{Route: hosts16, Local: "u", Domain: "c"}},
		{name: "route 17", in: "<" + route17 + "u@c>", err: ErrTooLong},

		// UTF-8 (RFC 6531).
		{name: "utf8 local", in: "<jöran@b.test>", utf8: true, want: Path{Local: "jöran", Domain: "b.test"}},
		{name: "utf8 domain", in: "<a@bücher.example>", utf8: true, want: Path{Local: "a", Domain: "bücher.example"}},
		{name: "utf8 both", in: "<用户@例子.广告>", utf8: true, want: Path{Local: "用户", Domain: "例子.广告"}},
		{name: "utf8 quoted", in: `<"jö ran"@d>`, utf8: true, want: Path{Local: "jö ran", Domain: "d"}},
		{name: "utf8 route", in: "<@bücher.example:a@b>", utf8: true, want: Path{Route: []string{"bücher.example"}, Local: "a", Domain: "b"}},
		{name: "utf8 local no flag", in: "<jöran@b.test>", err: ErrNeedUTF8},
		{name: "utf8 domain no flag", in: "<a@bücher.example>", err: ErrNeedUTF8},
		{name: "utf8 quoted no flag", in: `<"jö ran"@d>`, err: ErrNeedUTF8},
		{name: "utf8 route no flag", in: "<@bücher.example:a@b>", err: ErrNeedUTF8},
		{name: "bad utf8 flag", in: "<a\xff@b>", utf8: true, err: ErrSyntax},
		{name: "bad utf8 no flag", in: "<a\xff@b>", err: ErrSyntax},
		{name: "bad utf8 domain", in: "<a@b\xc3>", utf8: true, err: ErrSyntax},
		{name: "bad utf8 quoted", in: "<\"a\xc3\"@b>", utf8: true, err: ErrSyntax},
		{name: "utf8 quoted pair", in: `<"a\é"@b>`, utf8: true, err: ErrSyntax},
		{name: "utf8 in literal", in: "<a@[x:é]>", utf8: true, err: ErrSyntax},
		{name: "utf8 in literal no flag", in: "<a@[x:é]>", err: ErrSyntax},
		{name: "utf8 leading hyphen", in: "<a@-ü.b>", utf8: true, err: ErrSyntax},

		// Length limits.
		{name: "local 64", in: "<" + local64 + "@b>", want: Path{Local: local64, Domain: "b"}},
		{name: "local 65", in: "<" + local65 + "@b>", err: ErrTooLong},
		{name: "quoted local 64", in: "<" + q64 + "@b>", want: Path{Local: strings.Repeat("q", 62), Domain: "b"}, str: "<" + strings.Repeat("q", 62) + "@b>"},
		{name: "quoted local 65", in: "<" + q65 + "@b>", err: ErrTooLong},
		{name: "path 256", in: "<" + local64 + "@" + d189 + ">", want: Path{Local: local64, Domain: d189}},
		{name: "path 257", in: "<" + local64 + "@" + d190 + ">", err: ErrTooLong},
		{name: "label 64", in: "<a@" + label64 + ".b>", err: ErrSyntax},

		// CR, LF, NUL and other controls.
		{name: "CR local", in: "<a\r@b>", err: ErrSyntax},
		{name: "LF domain", in: "<a@b\n>", err: ErrSyntax},
		{name: "NUL local", in: "<a\x00@b>", err: ErrSyntax},
		{name: "CR quoted", in: "<\"a\r\"@b>", err: ErrSyntax},
		{name: "LF quoted pair", in: "<\"a\\\n\"@b>", err: ErrSyntax},
		{name: "NUL quoted pair", in: "<\"a\\\x00\"@b>", err: ErrSyntax},
		{name: "tab quoted", in: "<\"a\tb\"@b>", err: ErrSyntax},
		{name: "DEL quoted", in: "<\"a\x7fb\"@b>", err: ErrSyntax},
		{name: "CR literal", in: "<a@[x:a\rb]>", err: ErrSyntax},
		{name: "CR route", in: "<@a\r:b@c>", err: ErrSyntax},
		{name: "CRLF after", in: "<a@b>\r\n", err: ErrSyntax},
		{name: "NUL after", in: "<a@b>\x00", err: ErrSyntax},

		// Brackets and trailing garbage.
		{name: "empty", in: "", err: ErrSyntax},
		{name: "no brackets", in: "a@b", err: ErrSyntax},
		{name: "no open", in: "a@b>", err: ErrSyntax},
		{name: "no close", in: "<a@b", err: ErrSyntax},
		{name: "lone open", in: "<", err: ErrSyntax},
		{name: "no close quoted", in: `<"a"@b`, err: ErrSyntax},
		{name: "trailing", in: "<a@b>x", err: ErrSyntax},
		{name: "trailing gt", in: "<a@b>>", err: ErrSyntax},
		{name: "trailing space", in: "<a@b> ", err: ErrSyntax},
		{name: "leading space", in: " <a@b>", err: ErrSyntax},
		{name: "inner space", in: "<a @b>", err: ErrSyntax},
		{name: "double open", in: "<<a@b>>", err: ErrSyntax},
		{name: "stray gt in domain", in: "<a@b>c>", err: ErrSyntax},

		// Local part errors.
		{name: "no domain", in: "<a>", err: ErrSyntax},
		{name: "empty domain", in: "<a@>", err: ErrSyntax},
		{name: "two ats", in: "<a@b@c>", err: ErrSyntax},
		{name: "leading dot", in: "<.a@b>", err: ErrSyntax},
		{name: "trailing dot local", in: "<a.@b>", err: ErrSyntax},
		{name: "double dot", in: "<a..b@c>", err: ErrSyntax},
		{name: "space local", in: "<a b@c>", err: ErrSyntax},
		{name: "quote inside atom", in: `<a"b"@c>`, err: ErrSyntax},
		{name: "after quoted", in: `<"a"b@c>`, err: ErrSyntax},
		{name: "unterminated quote", in: `<"a@b>`, err: ErrSyntax},
		{name: "escaped closing quote", in: `<"a\"@b>`, err: ErrSyntax},
		{name: "backslash unquoted", in: `<a\b@c>`, err: ErrSyntax},
		{name: "paren comment", in: "<a(c)@b>", err: ErrSyntax},
		{name: "quoted postmaster", in: `<"postmaster">`, err: ErrSyntax},
		{name: "quoted no domain", in: `<"a b">`, err: ErrSyntax},

		// Domain errors.
		{name: "trailing dot domain", in: "<a@b.>", err: ErrSyntax},
		{name: "leading dot domain", in: "<a@.b>", err: ErrSyntax},
		{name: "empty label", in: "<a@b..c>", err: ErrSyntax},
		{name: "leading hyphen", in: "<a@-b.c>", err: ErrSyntax},
		{name: "trailing hyphen", in: "<a@b-.c>", err: ErrSyntax},
		{name: "underscore", in: "<a@b_c.d>", err: ErrSyntax},
		{name: "domain quote", in: `<a@"b">`, err: ErrSyntax},

		// Literal errors.
		{name: "ipv4 300", in: "<a@[300.1.1.1]>", err: ErrSyntax},
		{name: "ipv4 256", in: "<a@[1.1.1.256]>", err: ErrSyntax},
		{name: "ipv4 three", in: "<a@[1.2.3]>", err: ErrSyntax},
		{name: "ipv4 five", in: "<a@[1.2.3.4.5]>", err: ErrSyntax},
		{name: "ipv4 trailing dot", in: "<a@[1.2.3.4.]>", err: ErrSyntax},
		{name: "ipv4 empty octet", in: "<a@[1..3.4]>", err: ErrSyntax},
		{name: "ipv4 leading zero", in: "<a@[01.2.3.4]>", err: ErrSyntax},
		{name: "ipv4 four digits", in: "<a@[1000.2.3.4]>", err: ErrSyntax},
		{name: "ipv6 zz", in: "<a@[IPv6:zz]>", err: ErrSyntax},
		{name: "ipv6 is v4", in: "<a@[IPv6:192.0.2.1]>", err: ErrSyntax},
		{name: "ipv6 zone", in: "<a@[IPv6:fe80::1%eth0]>", err: ErrSyntax},
		{name: "ipv6 comp 6 groups", in: "<a@[IPv6:1:2:3::4:5:6]>", want: Path{Local: "a", Domain: "[IPv6:1:2:3::4:5:6]"}},
		{name: "ipv6 comp 7 groups", in: "<a@[IPv6:1:2:3::4:5:6:7]>", err: ErrSyntax},
		{name: "ipv6v4 comp 4 groups", in: "<a@[IPv6:1:2::3:4:192.0.2.1]>", want: Path{Local: "a", Domain: "[IPv6:1:2::3:4:192.0.2.1]"}},
		{name: "ipv6v4 comp 5 groups", in: "<a@[IPv6:1:2::3:4:5:192.0.2.1]>", err: ErrSyntax},
		{name: "ipv6v4 full", in: "<a@[IPv6:1:2:3:4:5:6:192.0.2.1]>", want: Path{Local: "a", Domain: "[IPv6:1:2:3:4:5:6:192.0.2.1]"}},
		{name: "ipv6 all zero", in: "<a@[IPv6:::]>", want: Path{Local: "a", Domain: "[IPv6:::]"}},
		{name: "ipv6 too many groups", in: "<a@[IPv6:1:2:3:4:5:6:7:8:9]>", err: ErrSyntax},
		{name: "ipv6 bare", in: "<a@[2001:db8::1]>", err: ErrSyntax},
		{name: "ipv6 bare letter tag", in: "<a@[fe80::1]>", err: ErrSyntax},
		{name: "empty literal", in: "<a@[]>", err: ErrSyntax},
		{name: "general empty content", in: "<a@[x:]>", err: ErrSyntax},
		{name: "general empty tag", in: "<a@[:x]>", err: ErrSyntax},
		{name: "general hyphen tag", in: "<a@[x-:a]>", err: ErrSyntax},
		{name: "general space", in: "<a@[x:a b]>", err: ErrSyntax},
		{name: "general backslash", in: `<a@[x:a\b]>`, err: ErrSyntax},
		{name: "general gt", in: "<a@[x:a>b]>", err: ErrSyntax},
		{name: "general quote", in: `<a@[x:a"b]>`, err: ErrSyntax},
		{name: "literal then garbage", in: "<a@[1.2.3.4]x>", err: ErrSyntax},
		{name: "literal unclosed", in: "<a@[1.2.3.4>", err: ErrSyntax},
		{name: "literal nested", in: "<a@[[1.2.3.4]]>", err: ErrSyntax},

		// Route errors.
		{name: "empty route host", in: "<@:a@b>", err: ErrSyntax},
		{name: "route no colon", in: "<@a>", err: ErrSyntax},
		{name: "route comma no at", in: "<@a,a@b>", err: ErrSyntax},
		{name: "route two hosts no colon", in: "<@a,@b>", err: ErrSyntax},
		{name: "route empty second", in: "<@a,@:u@b>", err: ErrSyntax},
		{name: "route trailing comma", in: "<@a,:u@b>", err: ErrSyntax},
		{name: "route no mailbox", in: "<@a:>", err: ErrSyntax},
		{name: "route empty local", in: "<@a:@b>", err: ErrSyntax},
		{name: "route trailing dot", in: "<@a.:u@b>", err: ErrSyntax},
		{name: "route bad literal", in: "<@[300.1.1.1]:u@b>", err: ErrSyntax},
		{name: "route literal garbage", in: "<@[1.2.3.4]x:u@b>", err: ErrSyntax},
		{name: "route literal unclosed", in: "<@[1.2.3.4:u@b>", err: ErrSyntax},
		{name: "route space", in: "<@a b:u@c>", err: ErrSyntax},
		{name: "route unterminated", in: "<@a", err: ErrSyntax},
		{name: "route postmaster", in: "<@a:postmaster>", err: ErrSyntax},
		{name: "route null", in: "<@a:<>>", err: ErrSyntax},
	}
}

func runPathCases(t *testing.T, parse func(string, bool) (Path, error), cases []pathCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parse(tc.in, tc.utf8)
			if tc.err != nil {
				checkErr(t, tc.in, err, tc.err)
				return
			}
			if err != nil {
				t.Fatalf("%q: unexpected error %v", tc.in, err)
			}
			if !samePath(p, tc.want) {
				t.Fatalf("%q: got %#v, want %#v", tc.in, p, tc.want)
			}
			if p.Route != nil && len(p.Route) == 0 {
				t.Fatalf("%q: empty non-nil Route", tc.in)
			}
			wantStr := tc.str
			if wantStr == "" {
				wantStr = tc.in
			}
			s := p.String()
			if s != wantStr {
				t.Fatalf("%q: String() = %q, want %q", tc.in, s, wantStr)
			}
			q, err := parse(s, tc.utf8)
			if err != nil || !samePath(p, q) {
				t.Fatalf("%q: reparse of %q gave %#v, %v", tc.in, s, q, err)
			}
			if p.NeedsUTF8() != hasNonASCII(tc.in) {
				t.Fatalf("%q: NeedsUTF8() = %v", tc.in, p.NeedsUTF8())
			}
		})
	}
}

func TestParseForwardPath(t *testing.T) {
	cases := append(commonPathCases(),
		pathCase{name: "postmaster", in: "<postmaster>", want: Path{Local: "postmaster"}},
		pathCase{name: "PostMaster", in: "<PostMaster>", want: Path{Local: "PostMaster"}},
		pathCase{name: "POSTMASTER", in: "<POSTMASTER>", want: Path{Local: "POSTMASTER"}},
		pathCase{name: "postmaster utf8", in: "<postmaster>", utf8: false, want: Path{Local: "postmaster"}},
		pathCase{name: "postmaster trailing", in: "<postmaster>x", err: ErrSyntax},
		pathCase{name: "postmasters", in: "<postmasters>", err: ErrSyntax},
		pathCase{name: "null", in: "<>", err: ErrSyntax},
		pathCase{name: "null utf8", in: "<>", utf8: true, err: ErrSyntax},
	)
	runPathCases(t, ParseForwardPath, cases)
}

func TestParseReversePath(t *testing.T) {
	cases := append(commonPathCases(),
		pathCase{name: "null", in: "<>", want: Path{}},
		pathCase{name: "null utf8", in: "<>", utf8: true, want: Path{}},
		pathCase{name: "null trailing", in: "<>x", err: ErrSyntax},
		pathCase{name: "null space", in: "< >", err: ErrSyntax},
		pathCase{name: "postmaster", in: "<postmaster>", err: ErrSyntax},
		pathCase{name: "PostMaster", in: "<PostMaster>", err: ErrSyntax},
	)
	runPathCases(t, ParseReversePath, cases)
}

func TestPostmasterPredicates(t *testing.T) {
	p, err := ParseForwardPath("<PostMaster>", false)
	if err != nil || !p.IsPostmaster() || p.IsNull() || p.Domain != "" {
		t.Fatalf("got %#v, %v", p, err)
	}
	n, err := ParseReversePath("<>", false)
	if err != nil || !n.IsNull() || n.IsPostmaster() || n.String() != "<>" || n.Mailbox() != "" {
		t.Fatalf("got %#v, %v", n, err)
	}
	d, _ := ParseForwardPath("<postmaster@b.test>", false)
	if d.IsPostmaster() {
		t.Fatalf("postmaster@b.test is not the domainless postmaster")
	}
}

func TestErrorText(t *testing.T) {
	_, err := ParseReversePath("<a@b", false)
	const want = `envelope: "<a@b" has no closing '>': syntax error in address`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
	long := "<" + strings.Repeat("a", 300) + "\r\n"
	_, err = ParseForwardPath(long, false)
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("error text not bounded: %v", err)
	}
}

func TestMailbox(t *testing.T) {
	tests := []struct {
		p    Path
		want string
	}{
		{Path{}, ""},
		{Path{Local: "PostMaster"}, "PostMaster"},
		{Path{Local: "a", Domain: "b"}, "a@b"},
		{Path{Route: []string{"r"}, Local: "a", Domain: "b"}, "a@b"},
		{Path{Local: "a b", Domain: "b"}, `"a b"@b`},
		{Path{Local: `a"b\c`, Domain: "b"}, `"a\"b\\c"@b`},
		{Path{Local: "", Domain: "b"}, `""@b`},
		{Path{Local: "a@b", Domain: "[192.0.2.1]"}, `"a@b"@[192.0.2.1]`},
		{Path{Local: "jö", Domain: "ü.de"}, "jö@ü.de"},
	}
	for _, tc := range tests {
		if got := tc.p.Mailbox(); got != tc.want {
			t.Errorf("%#v.Mailbox() = %q, want %q", tc.p, got, tc.want)
		}
	}
}

func TestNeedsUTF8(t *testing.T) {
	tests := []struct {
		p    Path
		want bool
	}{
		{Path{}, false},
		{Path{Local: "a", Domain: "b"}, false},
		{Path{Local: "ä", Domain: "b"}, true},
		{Path{Local: "a", Domain: "ü"}, true},
		{Path{Route: []string{"ü"}, Local: "a", Domain: "b"}, true},
	}
	for _, tc := range tests {
		if got := tc.p.NeedsUTF8(); got != tc.want {
			t.Errorf("%#v.NeedsUTF8() = %v, want %v", tc.p, got, tc.want)
		}
	}
}

// TestStringNeverBreaksLine feeds String paths no parser would produce.
func TestStringNeverBreaksLine(t *testing.T) {
	paths := []Path{
		{Local: "a\r\nRSET", Domain: "b"},
		{Local: "a", Domain: "b>\r\nDATA"},
		{Route: []string{"r\n", "s>"}, Local: "a\x00", Domain: "b c"},
		{Local: "x\x7f", Domain: "d"},
	}
	for _, p := range paths {
		for _, s := range []string{p.String(), p.Mailbox()} {
			if strings.ContainsAny(s, "\r\n\x00\x7f") {
				t.Errorf("%#v formats as %q", p, s)
			}
		}
		if s := p.String(); strings.Count(s, ">") != 1 || !strings.HasSuffix(s, ">") {
			t.Errorf("%#v formats as %q: stray '>'", p, s)
		}
	}
}

func TestCheckDomainLimits(t *testing.T) {
	if err := checkDomain(makeDomain(255), "domain"); err != nil {
		t.Fatalf("255 octets: %v", err)
	}
	checkErr(t, "256", checkDomain(makeDomain(256), "domain"), ErrTooLong)
	checkErr(t, "empty", checkDomain("", "domain"), ErrSyntax)
	checkErr(t, ".", checkDomain(".", "domain"), ErrSyntax)
	checkErr(t, "[", checkDomain("[", "domain"), ErrSyntax)
	checkErr(t, "[1.2.3.4", checkDomain("[1.2.3.4", "domain"), ErrSyntax)
}

func TestSplitArg(t *testing.T) {
	tests := []struct {
		in, path, params string
		err              bool
	}{
		{in: "<a@b>", path: "<a@b>"},
		{in: "<>", path: "<>"},
		{in: "<> SIZE=10", path: "<>", params: "SIZE=10"},
		{in: " <a@b>", path: "<a@b>"},
		{in: "   <a@b>  SIZE=1 BODY=8BITMIME", path: "<a@b>", params: "SIZE=1 BODY=8BITMIME"},
		{in: "<a@b> ", path: "<a@b>"},
		{in: "<a@b> SIZE=1 ", path: "<a@b>", params: "SIZE=1 "},
		{in: `<"a> b"@c> SIZE=1`, path: `<"a> b"@c>`, params: "SIZE=1"},
		{in: `<"a\"> b"@c>`, path: `<"a\"> b"@c>`},
		{in: `<"a\\"@c> X`, path: `<"a\\"@c>`, params: "X"},
		{in: "<@a,@b:u@c> NOTIFY=NEVER", path: "<@a,@b:u@c>", params: "NOTIFY=NEVER"},
		{in: "<a@b> <c@d>", path: "<a@b>", params: "<c@d>"},
		{in: "", err: true},
		{in: "   ", err: true},
		{in: "a@b", err: true},
		{in: "a@b>", err: true},
		{in: "<a@b", err: true},
		{in: `<"a>`, err: true},
		{in: `<"a\">`, err: true},
		{in: "<a@b>SIZE=1", err: true},
		{in: "\t<a@b>", err: true},
		{in: "<a@b>\tSIZE=1", err: true},
	}
	for _, tc := range tests {
		path, params, err := SplitArg(tc.in)
		if tc.err {
			checkErr(t, tc.in, err, ErrSyntax)
			continue
		}
		if err != nil || path != tc.path || params != tc.params {
			t.Errorf("SplitArg(%q) = %q, %q, %v; want %q, %q", tc.in, path, params, err, tc.path, tc.params)
		}
	}
}

func BenchmarkParseForwardPath(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseForwardPath("<first.last@mail.example.com>", false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseForwardPathRoute(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseForwardPath(`<@relay.example,@[192.0.2.1]:"a b"@mail.example.com>`, false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPathString(b *testing.B) {
	p := Path{Route: []string{"relay.example"}, Local: "first.last", Domain: "mail.example.com"}
	b.ReportAllocs()
	for b.Loop() {
		_ = p.String()
	}
}
