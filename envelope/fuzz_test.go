package envelope

import (
	"errors"
	"strings"
	"testing"
)

// pathSeeds are shared by f.Add; testdata/fuzz holds more.
var pathSeeds = []string{
	"<>", "<postmaster>", "<PostMaster>", "<a@b>", "<first.last@mail.example.com>",
	`<"a b"@d>`, `<"a\"b\\c"@d>`, `<""@d>`, `<"a>b"@d>`, "<a@[192.0.2.1]>",
	"<a@[IPv6:2001:db8::1]>", "<a@[x-tag:a:b]>", "<@a,@b:u@c>", "<@[192.0.2.1],@b:u@c>",
	"<jöran@bücher.example>", "<a%c%d@b>", "<@:a@b>", "<a@b.>", "<a@b>x", "<a\r@b>",
	`<"a\` + "\x00" + `"@b>`, " <a@b> SIZE=1",
}

func FuzzPath(f *testing.F) {
	for _, s := range pathSeeds {
		f.Add(s, false)
		f.Add(s, true)
	}
	parsers := []struct {
		name  string
		parse func(string, bool) (Path, error)
	}{
		{"reverse", ParseReversePath},
		{"forward", ParseForwardPath},
	}
	f.Fuzz(func(t *testing.T, s string, utf8 bool) {
		for _, ps := range parsers {
			p, err := ps.parse(s, utf8)
			if err != nil {
				if !onlyOneSentinel(err) {
					t.Fatalf("%s(%q): %v does not wrap exactly one sentinel", ps.name, s, err)
				}
				if strings.ContainsAny(err.Error(), "\r\n") {
					t.Fatalf("%s(%q): error text %q breaks lines", ps.name, s, err)
				}
				if errors.Is(err, ErrNeedUTF8) {
					if utf8 {
						t.Fatalf("%s(%q, true): %v", ps.name, s, err)
					}
					if _, err := ps.parse(s, true); err != nil {
						t.Fatalf("%s(%q): ErrNeedUTF8 without SMTPUTF8 but %v with it", ps.name, s, err)
					}
				}
				continue
			}
			if !utf8 {
				if q, err := ps.parse(s, true); err != nil || !samePath(p, q) {
					t.Fatalf("%s(%q): SMTPUTF8 changed the result: %#v, %v", ps.name, s, q, err)
				}
			}
			checkFormatted(t, ps.name, ps.parse, p, utf8)
			q, ok := p.PercentHack()
			if ok {
				checkFormatted(t, ps.name+" PercentHack", ps.parse, q, utf8)
			} else if !samePath(p, q) {
				t.Fatalf("PercentHack(%q) changed p without reporting it", s)
			}
			checkFormatted(t, ps.name+" StripFirstHop", ps.parse, p.StripFirstHop(), utf8)
			checkFormatted(t, ps.name+" WithoutRoute", ps.parse, p.WithoutRoute(), utf8)
			if h := p.NextHop(); h != "" && checkDomain(h, "hop") != nil {
				t.Fatalf("NextHop(%q) = %q is not a domain", s, h)
			}
		}
		if path, params, err := SplitArg(s); err == nil {
			if !strings.HasPrefix(path, "<") || !strings.HasSuffix(path, ">") || strings.HasPrefix(params, " ") {
				t.Fatalf("SplitArg(%q) = %q, %q", s, path, params)
			}
		} else if !errors.Is(err, ErrSyntax) || !onlyOneSentinel(err) {
			t.Fatalf("SplitArg(%q): %v", s, err)
		}
	})
}

// checkFormatted checks that p, which a parser accepted or derived from an
// accepted path, formats to one safe token that parses back to p.
func checkFormatted(t *testing.T, name string, parse func(string, bool) (Path, error), p Path, utf8 bool) {
	t.Helper()
	if p.Route != nil && len(p.Route) == 0 {
		t.Fatalf("%s: empty non-nil Route in %#v", name, p)
	}
	out := p.String()
	if strings.ContainsAny(out, "\r\n\x00") || strings.ContainsAny(p.Mailbox(), "\r\n\x00") {
		t.Fatalf("%s: %#v formats as %q", name, p, out)
	}
	if len(out) > MaxPathLen {
		t.Fatalf("%s: %q is longer than %d", name, out, MaxPathLen)
	}
	q, err := parse(out, utf8)
	if err != nil || !samePath(p, q) {
		t.Fatalf("%s: %#v formats as %q, which parses as %#v, %v", name, p, out, q, err)
	}
	if q.String() != out {
		t.Fatalf("%s: %q formats again as %q", name, out, q.String())
	}
	if !utf8 && p.NeedsUTF8() {
		t.Fatalf("%s: %q needs SMTPUTF8", name, out)
	}
	// The formatted path survives the split of a command line.
	path, params, err := SplitArg(out + " X=1")
	if err != nil || path != out || params != "X=1" {
		t.Fatalf("%s: SplitArg(%q) = %q, %q, %v", name, out+" X=1", path, params, err)
	}
}

var paramSeeds = []string{
	"", "SIZE=1024 BODY=8BITMIME", "SMTPUTF8", "AUTH=<>", "AUTH=joe+2Bx@b",
	"RET=HDRS ENVID=QQ+20314", "NOTIFY=SUCCESS,FAILURE,DELAY", "NOTIFY=NEVER,SUCCESS",
	"ORCPT=rfc822;a+2Bb@c", `ORCPT=utf-8;j\x{F6}ran@\x{4F8B}`, "ORCPT=utf-8;jöran@b",
	"SIZE=99999999999999999999", "size=1 SIZE=2", "X-FOO=1", "ENVID=a+0D+0A",
	"MT-PRIORITY=-9 BY=-5;NT REQUIRETLS", "BY=999999999;R", "MT-PRIORITY=+0",
}

func FuzzParams(f *testing.F) {
	for _, s := range paramSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if m, err := ParseMailParams(s); err == nil {
			out := m.String()
			checkParamText(t, s, out)
			m2, err := ParseMailParams(strings.TrimPrefix(out, " "))
			if err != nil || m2 != m {
				t.Fatalf("ParseMailParams(%q) = %#v formats as %q, which parses as %#v, %v", s, m, out, m2, err)
			}
			if m2.String() != out {
				t.Fatalf("%q formats again as %q", out, m2.String())
			}
		} else if !onlyOneSentinel(err) || strings.ContainsAny(err.Error(), "\r\n") {
			t.Fatalf("ParseMailParams(%q): %v", s, err)
		}
		if r, err := ParseRcptParams(s); err == nil {
			out := r.String()
			checkParamText(t, s, out)
			r2, err := ParseRcptParams(strings.TrimPrefix(out, " "))
			if err != nil || r2 != r {
				t.Fatalf("ParseRcptParams(%q) = %#v formats as %q, which parses as %#v, %v", s, r, out, r2, err)
			}
			if r2.String() != out {
				t.Fatalf("%q formats again as %q", out, r2.String())
			}
		} else if !onlyOneSentinel(err) || strings.ContainsAny(err.Error(), "\r\n") {
			t.Fatalf("ParseRcptParams(%q): %v", s, err)
		}
		if d, err := DecodeXtext(EncodeXtext(s)); err != nil || d != s {
			t.Fatalf("xtext round trip of %q: %q, %v", s, d, err)
		}
		if d, err := DecodeXtext(s); err == nil {
			if d2, err := DecodeXtext(EncodeXtext(d)); err != nil || d2 != d {
				t.Fatalf("xtext %q: %q re-encodes badly: %q, %v", s, d, d2, err)
			}
		}
		if d, err := decodeUTF8Addr(s); err == nil {
			if d2, err := decodeUTF8Addr(encodeUTF8Addr(d)); err != nil || d2 != d {
				t.Fatalf("utf-8 addr %q: %q re-encodes badly: %q, %v", s, d, d2, err)
			}
		}
	})
}

// checkParamText checks that formatted parameters are one line of
// printable ASCII, each parameter preceded by one space.
func checkParamText(t *testing.T, in, out string) {
	t.Helper()
	for i := 0; i < len(out); i++ {
		if out[i] < ' ' || out[i] > '~' {
			t.Fatalf("%q formats as %q: byte %#x", in, out, out[i])
		}
	}
	if out != "" && (out[0] != ' ' || strings.Contains(out, "  ") || strings.HasSuffix(out, " ")) {
		t.Fatalf("%q formats as %q: bad spacing", in, out)
	}
}
