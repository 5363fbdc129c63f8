package mailauth

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/resolve/dnstest"
)

// spfZones are the SPF records of the tests: one name per record shape.
var spfZones = []dnstest.Zone{
	{Name: "spf.test", Records: []string{
		`@ TXT "v=spf1 ip4:127.0.28.10 -all"`,
		`a1 A 127.0.28.11`,
		`a1 TXT "v=spf1 a -all"`,
		`a24 TXT "v=spf1 a:a1.spf.test/24 -all"`,
		`mx1 MX 10 mail.mx1`,
		`mail.mx1 A 127.0.28.12`,
		`mx1 TXT "v=spf1 mx ~all"`,
		`nomx TXT "v=spf1 mx -all"`,
		`ip4 TXT "v=spf1 ip4:127.0.28.13/32 -all"`,
		`inc TXT "v=spf1 include:ip4.spf.test ?all"`,
		`red TXT "v=spf1 redirect=ip4.spf.test"`,
		`redall TXT "v=spf1 -all redirect=ip4.spf.test"`,
		`exp TXT "v=spf1 ip4:127.0.28.10 -all exp=why.spf.test"`,
		`why TXT "%{i} may not send mail for %{d}"`,
		`soft TXT "v=spf1 ~all"`,
		`neutral TXT "v=spf1 ?all"`,
		`nospf A 127.0.28.10`,
		`nospf TXT "not an SPF record"`,
		`multi TXT "v=spf1 -all"`,
		`multi TXT "v=spf1 +all"`,
		`bad TXT "v=spf1 frobnicate:x -all"`,
		`many TXT "v=spf1 a:n1.spf.test a:n2.spf.test a:n3.spf.test a:n4.spf.test a:n5.spf.test a:n6.spf.test a:n7.spf.test a:n8.spf.test a:n9.spf.test a:n10.spf.test a:n11.spf.test -all"`,
		`n1 A 127.0.0.2`, `n2 A 127.0.0.2`, `n3 A 127.0.0.2`, `n4 A 127.0.0.2`, `n5 A 127.0.0.2`, `n6 A 127.0.0.2`,
		`n7 A 127.0.0.2`, `n8 A 127.0.0.2`, `n9 A 127.0.0.2`, `n10 A 127.0.0.2`, `n11 A 127.0.0.2`,
		`ten TXT "v=spf1 a:n1.spf.test a:n2.spf.test a:n3.spf.test a:n4.spf.test a:n5.spf.test a:n6.spf.test a:n7.spf.test a:n8.spf.test a:n9.spf.test ip4:127.0.28.10 -all"`,
		`void TXT "v=spf1 a:x1.spf.test a:x2.spf.test a:x3.spf.test ip4:127.0.28.10 -all"`,
		`void2 TXT "v=spf1 a:x1.spf.test a:x2.spf.test ip4:127.0.28.10 -all"`,
		`tmp TXT "v=spf1 include:broken.test -all"`,
		`tmpa TXT "v=spf1 a:broken.test ip4:127.0.28.10 -all"`,
		`incnone TXT "v=spf1 include:nospf.spf.test -all"`,
		`rednx TXT "v=spf1 redirect=nx.spf.test"`,
		`mac TXT "v=spf1 exists:%{i}.ok.spf.test -all"`,
		`127.0.28.14.ok A 127.0.0.2`,
		`v6 TXT "v=spf1 ip6:2001:db8::/32 -all"`,
		`plusmx TXT "v=spf1 +mx:mx1.spf.test/24 ~all"`,
	}},
	// Every answer from broken.test fails validation: SERVFAIL.
	{Name: "broken.test", Records: []string{`@ TXT "v=spf1 +all"`}, Bogus: true},
}

// spfCase is one SPF check, as pyspf's check2(i, s, h) takes it.
type spfCase struct {
	Name string `json:"-"`
	IP   string `json:"i"`
	From string `json:"s"`
	HELO string `json:"h"`
	Want Status `json:"-"`
}

var spfCases = []spfCase{
	{"ip4 pass", "127.0.28.10", "u@spf.test", "c.test", Pass},
	{"ip4 fail", "127.0.28.20", "u@spf.test", "c.test", Fail},
	{"a pass", "127.0.28.11", "u@a1.spf.test", "c.test", Pass},
	{"a fail", "127.0.28.12", "u@a1.spf.test", "c.test", Fail},
	{"a/24 pass", "127.0.28.99", "u@a24.spf.test", "c.test", Pass},
	{"a/24 fail", "127.0.29.11", "u@a24.spf.test", "c.test", Fail},
	{"mx pass", "127.0.28.12", "u@mx1.spf.test", "c.test", Pass},
	{"mx softfail", "127.0.28.13", "u@mx1.spf.test", "c.test", SoftFail},
	{"mx without MX records", "127.0.28.12", "u@nomx.spf.test", "c.test", Fail},
	{"mx:domain/24 pass", "127.0.28.200", "u@plusmx.spf.test", "c.test", Pass},
	{"include pass", "127.0.28.13", "u@inc.spf.test", "c.test", Pass},
	{"include no match: neutral", "127.0.28.14", "u@inc.spf.test", "c.test", Neutral},
	{"include of a domain without SPF", "127.0.28.13", "u@incnone.spf.test", "c.test", PermError},
	{"redirect pass", "127.0.28.13", "u@red.spf.test", "c.test", Pass},
	{"redirect fail", "127.0.28.14", "u@red.spf.test", "c.test", Fail},
	{"redirect ignored after all", "127.0.28.13", "u@redall.spf.test", "c.test", Fail},
	{"redirect to no domain", "127.0.28.13", "u@rednx.spf.test", "c.test", PermError},
	{"exp pass", "127.0.28.10", "u@exp.spf.test", "c.test", Pass},
	{"exp fail", "127.0.28.11", "u@exp.spf.test", "c.test", Fail},
	{"softfail", "127.0.28.10", "u@soft.spf.test", "c.test", SoftFail},
	{"neutral", "127.0.28.10", "u@neutral.spf.test", "c.test", Neutral},
	{"no SPF record", "127.0.28.10", "u@nospf.spf.test", "c.test", None},
	{"no such domain", "127.0.28.10", "u@nx.spf.test", "c.test", None},
	{"two records", "127.0.28.10", "u@multi.spf.test", "c.test", PermError},
	{"unknown mechanism", "127.0.28.10", "u@bad.spf.test", "c.test", PermError},
	{"11 lookups", "127.0.28.10", "u@many.spf.test", "c.test", PermError},
	{"10 lookups", "127.0.28.10", "u@ten.spf.test", "c.test", Pass},
	{"3 void lookups", "127.0.28.10", "u@void.spf.test", "c.test", PermError},
	{"2 void lookups", "127.0.28.10", "u@void2.spf.test", "c.test", Pass},
	{"SERVFAIL for the domain", "127.0.28.10", "u@broken.test", "c.test", TempError},
	{"SERVFAIL in include", "127.0.28.10", "u@tmp.spf.test", "c.test", TempError},
	{"SERVFAIL in a", "127.0.28.10", "u@tmpa.spf.test", "c.test", TempError},
	{"macro exists pass", "127.0.28.14", "u@mac.spf.test", "c.test", Pass},
	{"macro exists fail", "127.0.28.15", "u@mac.spf.test", "c.test", Fail},
	{"ip6 pass", "2001:db8::5", "u@v6.spf.test", "c.test", Pass},
	{"ip6 fail", "2001:db9::5", "u@v6.spf.test", "c.test", Fail},
	{"HELO identity pass", "127.0.28.11", "", "a1.spf.test", Pass},
	{"HELO identity fail", "127.0.28.30", "", "a1.spf.test", Fail},
}

// pyspfScript runs pyspf's check2 on each case, its DNS lookups sent to
// the test's unbound.
const pyspfScript = `
import json, sys
import dns.resolver, spf
server, cases = json.load(sys.stdin)
r = dns.resolver.Resolver(configure=False)
host, port = server.rsplit(":", 1)
r.nameservers = [host]
r.port = int(port)
dns.resolver.default_resolver = r
out = []
for c in cases:
    res, expl = spf.check2(i=c["i"], s=c["s"], h=c["h"])
    out.append(res)
print(json.dumps(out))
`

// TestSPFAgainstPyspf checks each record shape with our SPF and with
// pyspf (Debian's python3-spf), both asking the same unbound: the
// results must be the same, and the one the case expects.
func TestSPFAgainstPyspf(t *testing.T) {
	py := python(t, "spf, dns.resolver", "python3-spf python3-dnspython")
	srv, r := startDNS(t, spfZones...)
	var theirs []string
	runPython(t, py, pyspfScript, []any{srv.Addr, spfCases}, &theirs)
	if len(theirs) != len(spfCases) {
		t.Fatalf("pyspf gave %d results for %d cases", len(theirs), len(spfCases))
	}
	agree := 0
	for i, c := range spfCases {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		got := CheckSPF(ctx, r, net.ParseIP(c.IP), c.HELO, c.From)
		cancel()
		if string(got.Status) == theirs[i] {
			agree++
		} else {
			t.Errorf("%s (i=%s s=%q h=%s): ours %s (%s), pyspf %s", c.Name, c.IP, c.From, c.HELO, got.Status, got.Reason, theirs[i])
		}
		if got.Status != c.Want {
			t.Errorf("%s: ours %s, want %s", c.Name, got.Status, c.Want)
		}
	}
	t.Logf("SPF: %d of %d cases agree with pyspf", agree, len(spfCases))
}

// TestSPFResultField: the resinfo names the identity checked, and an
// error says why, for the operator reading the field.
func TestSPFResultField(t *testing.T) {
	_, r := startDNS(t, spfZones...)
	ctx := context.Background()
	for _, c := range []struct {
		ip, from, helo, want string
	}{
		{"127.0.28.10", "u@spf.test", "c.test", "spf=pass smtp.mailfrom=u@spf.test"},
		{"127.0.28.11", "", "a1.spf.test", "spf=pass smtp.helo=a1.spf.test"},
		{"127.0.28.11", "", "[127.0.28.11]", `spf=none smtp.helo="[127.0.28.11]"`},
		{"127.0.28.10", "u@broken.test", "c.test", `spf=temperror reason="broken.test: server answered SERVFAIL for TXT" smtp.mailfrom=u@broken.test`},
	} {
		got := CheckSPF(ctx, r, net.ParseIP(c.ip), c.helo, c.from).String()
		if got != c.want {
			t.Errorf("CheckSPF(%s, %q, %q) = %s, want %s", c.ip, c.helo, c.from, got, c.want)
		}
		if strings.ContainsAny(got, "\r\n") {
			t.Errorf("line break in %q", got)
		}
	}
}
