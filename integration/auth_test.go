package integration

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/dkim"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/resolve/dnstest"
)

// Inbound authentication (docs/design.md §16) on 127.0.28.x: relays
// resolving through an unbound the test starts, mail sent with swaks
// from a chosen address so that SPF sees it.

// authNode is a relay NAME on ip that resolves through dnsAddr and
// judges every client ([auth] as set), outsiders included: no
// relay_networks, mail for its own domain only.
func authNode(t *testing.T, name, ip, dnsAddr string, auth config.Auth) *node {
	t.Helper()
	n := newNode(t, name, ip)
	n.realDNS = true
	n.cfg.DNS.Servers = []string{dnsAddr}
	n.cfg.RelayNetworks = nil
	n.cfg.Auth = auth
	return n
}

// swaks sends msg from the address from (bound with --local-interface,
// so that it is the client address SPF judges) and returns what it
// printed; it does not fail on a refusal, which the caller looks for.
func swaks(t *testing.T, server, from, helo, mailFrom, to, msg string) string {
	t.Helper()
	if _, err := exec.LookPath("swaks"); err != nil {
		t.Skip("swaks is not installed (apt-get install swaks)")
	}
	file := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(file, []byte(msg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("swaks", "--server", server, "--local-interface", from, "--ehlo", helo,
		"--from", mailFrom, "--to", to, "--data", "@"+file, "--timeout", "20").CombinedOutput()
	return string(out)
}

// plainMsg is an unsigned message from sender@domain.
func plainMsg(domain, subject string) string {
	return "From: Sender <sender@" + domain + ">\r\nTo: <alice@r.test>\r\nSubject: " + subject +
		"\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", "-") + "@" + domain + ">\r\n\r\nHello.\r\n"
}

// authZones publish SPF (127.0.28.30 may send for every domain) and
// DMARC policies: reject for a.test, quarantine for q.test.
func authZones() []dnstest.Zone {
	return []dnstest.Zone{
		{Name: "a.test", Records: []string{`@ TXT "v=spf1 ip4:127.0.28.30 -all"`, `_dmarc TXT "v=DMARC1; p=reject"`}},
		{Name: "q.test", Records: []string{`@ TXT "v=spf1 ip4:127.0.28.30 -all"`, `_dmarc TXT "v=DMARC1; p=quarantine"`}},
		// Every answer from t.test fails validation (SERVFAIL): SPF
		// and DMARC lookups fail for now.
		{Name: "t.test", Records: []string{`@ TXT "v=spf1 -all"`}, Bogus: true},
	}
}

// TestAuthSPFRefused: with spf_reject_fail, MAIL FROM a domain whose SPF
// does not list the client is refused with 550 5.7.23; from a listed
// address the mail is taken, with spf=pass recorded; and when the lookup
// fails for now, the mail is taken too, with spf=temperror.
func TestAuthSPFRefused(t *testing.T) {
	srv := dnstest.Start(t, "127.0.28.1", authZones()...)
	r := authNode(t, "r", "127.0.28.20", srv.Addr, config.Auth{SPF: true, SPFRejectFail: true})
	r.start()
	out := swaks(t, r.addr, "127.0.28.31", "mx.a.test", "sender@a.test", "alice@r.test", plainMsg("a.test", "spf refused"))
	if !regexp.MustCompile(`(?m)^<\*\* +550 5\.7\.23 SPF check failed: 127\.0\.28\.31 is not allowed to send mail for a\.test`).MatchString(out) {
		t.Errorf("MAIL FROM from an address SPF does not list: want 550 5.7.23; swaks:\n%s", out)
	}
	out = swaks(t, r.addr, "127.0.28.30", "mx.a.test", "sender@a.test", "alice@r.test", plainMsg("a.test", "spf passes"))
	msg := waitMessage(t, r, "alice")
	if !strings.Contains(msg, "Authentication-Results: r.test;\r\n\tspf=pass smtp.mailfrom=sender@a.test\r\n") {
		t.Errorf("stored copy lacks spf=pass; swaks:\n%s\nmessage:\n%s", out, msg)
	}
	out = swaks(t, r.addr, "127.0.28.31", "mx.t.test", "sender@t.test", "alice@r.test", plainMsg("t.test", "spf temperror"))
	if !strings.Contains(out, "<-  250 2.0.0") {
		t.Fatalf("SPF temperror: the message was not taken; swaks:\n%s", out)
	}
	waitFor(t, 20*time.Second, "the second message for alice", func() bool { return len(r.mailboxRaw("alice")) == 2 })
	found := false
	for _, m := range r.mailboxRaw("alice") {
		found = found || strings.Contains(string(m), "\tspf=temperror reason=\"t.test: server answered SERVFAIL for TXT\" smtp.mailfrom=sender@t.test\r\n")
	}
	if !found {
		t.Errorf("no stored copy records spf=temperror")
	}
}

// TestAuthDMARCReject: with dmarc_reject, an unsigned message From a
// p=reject domain, from an address its SPF does not list (spf=fail,
// not refused: spf_reject_fail is off), is refused at the end of DATA
// with 550 5.7.1.
func TestAuthDMARCReject(t *testing.T) {
	srv := dnstest.Start(t, "127.0.28.1", authZones()...)
	r := authNode(t, "r", "127.0.28.21", srv.Addr, config.Auth{SPF: true, DMARC: true, DMARCReject: true})
	r.start()
	out := swaks(t, r.addr, "127.0.28.31", "mx.a.test", "sender@a.test", "alice@r.test", plainMsg("a.test", "dmarc refused"))
	if !regexp.MustCompile(`(?m)^<-  250 2\.1\.0 `).MatchString(out) || !regexp.MustCompile(`(?m)^<\*\* +550 5\.7\.1 Message rejected by the DMARC policy of a\.test`).MatchString(out) {
		t.Errorf("want MAIL FROM taken and the message refused with 550 5.7.1 after DATA; swaks:\n%s", out)
	}
	if n := len(r.mailboxRaw("alice")); n != 0 {
		t.Errorf("%d messages stored, want none", n)
	}
}

// TestAuthDMARCQuarantine: a failing message From a p=quarantine domain
// is taken and marked with X-Relay-DMARC; so is one From a p=reject
// domain when dmarc_reject is off (RFC 7489 §6.7 lets a receiver
// quarantine instead).
func TestAuthDMARCQuarantine(t *testing.T) {
	srv := dnstest.Start(t, "127.0.28.1", authZones()...)
	r := authNode(t, "r", "127.0.28.22", srv.Addr, config.Auth{SPF: true, DMARC: true})
	r.start()
	for _, domain := range []string{"q.test", "a.test"} {
		out := swaks(t, r.addr, "127.0.28.31", "mx."+domain, "sender@"+domain, "alice@r.test", plainMsg(domain, "marked"))
		if !strings.Contains(out, "<-  250 2.0.0") {
			t.Fatalf("From %s: not taken; swaks:\n%s", domain, out)
		}
	}
	waitFor(t, 20*time.Second, "two messages for alice", func() bool { return len(r.mailboxRaw("alice")) == 2 })
	box := r.mailboxRaw("alice")
	for _, want := range []string{
		"X-Relay-DMARC: quarantine (dmarc=fail (p=quarantine dis=quarantine) header.from=q.test) by r.test\r\n",
		"X-Relay-DMARC: quarantine (dmarc=fail (p=reject dis=reject) header.from=a.test) by r.test\r\n",
	} {
		found := false
		for _, msg := range box {
			found = found || strings.Contains(string(msg), want)
		}
		if !found {
			t.Errorf("no message has %q:\n%s\n%s", want, box[0], box[1])
		}
	}
	// Passing mail is not marked.
	swaks(t, r.addr, "127.0.28.30", "mx.q.test", "sender@q.test", "alice@r.test", plainMsg("q.test", "passes"))
	waitFor(t, 20*time.Second, "a third message for alice", func() bool { return len(r.mailboxRaw("alice")) == 3 })
	for _, msg := range r.mailboxRaw("alice") {
		if strings.Contains(string(msg), "Subject: passes\r\n") &&
			(strings.Contains(string(msg), "X-Relay-DMARC") || !strings.Contains(string(msg), "\tdmarc=pass (p=quarantine dis=none) header.from=q.test\r\n")) {
			t.Errorf("passing message:\n%s", msg)
		}
	}
}

// TestAuthForgedResultsRemoved: Authentication-Results fields that
// claim the relay's authserv-id are removed (RFC 8601 §5), another
// host's are kept, and the relay's own field is the only one naming it.
func TestAuthForgedResultsRemoved(t *testing.T) {
	srv := dnstest.Start(t, "127.0.28.1", authZones()...)
	r := authNode(t, "r", "127.0.28.23", srv.Addr, config.Auth{SPF: true, DMARC: true})
	r.start()
	forged := "Authentication-Results: r.test; dkim=pass header.d=a.test; spf=pass smtp.mailfrom=sender@a.test; dmarc=pass header.from=a.test\r\n" +
		"Authentication-Results: R.TEST;\r\n\tarc=pass\r\n" +
		"Authentication-Results: mx.other.test; spf=pass smtp.mailfrom=sender@a.test\r\n"
	swaks(t, r.addr, "127.0.28.31", "mx.a.test", "sender@a.test", "alice@r.test", forged+plainMsg("a.test", "forged"))
	msg := waitMessage(t, r, "alice")
	if n := strings.Count(strings.ToLower(msg), "authentication-results: r.test;"); n != 1 {
		t.Errorf("%d Authentication-Results fields name r.test, want 1 (ours):\n%s", n, msg)
	}
	for _, want := range []string{
		"Authentication-Results: r.test;\r\n\tspf=fail smtp.mailfrom=sender@a.test;\r\n\tdmarc=fail (p=reject dis=reject) header.from=a.test\r\n",
		"Authentication-Results: mx.other.test; spf=pass",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("stored copy lacks %q:\n%s", want, msg)
		}
	}
}

// rsaRecord writes a new RSA key for a DKIM or ARC selector and returns
// its file and a zone line publishing it, the record split into
// strings of at most 255 octets as DNS wants.
func rsaRecord(t *testing.T, selector string) (path, zoneLine string) {
	t.Helper()
	k, err := dkim.GenerateKey(dkim.RSA)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), selector+".pem")
	if err := dkim.WriteKey(path, k); err != nil {
		t.Fatal(err)
	}
	rec, err := dkim.TXTValue(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for len(rec) > 0 {
		n := min(len(rec), 250)
		parts = append(parts, fmt.Sprintf("%q", rec[:n]))
		rec = rec[n:]
	}
	return path, selector + "._domainkey TXT " + strings.Join(parts, " ")
}

// TestInboundAuthThreeRelays: a message signed by its origin, a,
// crosses b and c. b and c check SPF, DKIM, DMARC and ARC, and seal
// with [[arc.sign]] keys; each adds one Authentication-Results field
// with every verdict, and its ARC-Authentication-Results says the same.
// b sees a, which a.test's SPF lists: spf=pass. c sees b, which it does
// not (forwarding breaks SPF; ~all makes that a softfail): DMARC still
// passes on a's aligned signature, and c finds b's seal valid.
func TestInboundAuthThreeRelays(t *testing.T) {
	dkimKey, dkimLine := rsaRecord(t, "s1")
	bKey, bLine := rsaRecord(t, "arc1")
	cKey, cLine := rsaRecord(t, "arc1")
	srv := dnstest.Start(t, "127.0.28.1",
		dnstest.Zone{Name: "a.test", Records: []string{`@ TXT "v=spf1 ip4:127.0.28.41 ~all"`, `_dmarc TXT "v=DMARC1; p=reject"`, dkimLine}},
		dnstest.Zone{Name: "b.test", Records: []string{bLine}},
		dnstest.Zone{Name: "c.test", Records: []string{cLine}})

	check := config.Auth{SPF: true, DMARC: true, CheckRelayNetworks: true}
	// a checks only clients it does not trust (the default): the
	// author's, in its relay_networks, is not judged.
	a := authNode(t, "a", "127.0.28.41", srv.Addr, config.Auth{SPF: true, DMARC: true})
	b := authNode(t, "b", "127.0.28.42", srv.Addr, check)
	c := authNode(t, "c", "127.0.28.43", srv.Addr, check)
	// Our three relays trust each other: a's hand-off token tells b the
	// mail is not b's to sign; each still judges what it receives.
	for _, n := range []*node{a, b, c} {
		n.cfg.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.28.40/29")}
	}
	a.cfg.DKIM.Sign = []config.DKIMSign{{Domain: "a.test", Selector: "s1", Key: dkimKey}}
	b.cfg.ARC.Sign = []config.DKIMSign{{Domain: "b.test", Selector: "arc1", Key: bKey}}
	c.cfg.ARC.Sign = []config.DKIMSign{{Domain: "c.test", Selector: "arc1", Key: cKey}}
	// Each hop's connections leave from its own address, the one the
	// next hop judges.
	a.route("c.test", b.addr)
	b.route("c.test", c.addr)
	for _, n := range []*node{a, b} {
		n.cfg.Routes[0].SourceIP = netip.MustParseAddr(strings.Split(n.addr, ":")[0])
	}
	c.start()
	b.start()
	a.start()

	// The author's client is in a's relay_networks: a originates and
	// signs.
	out := swaks(t, a.addr, "127.0.28.44", "client.a.test", "sender@a.test", "alice@c.test", signedMsg("sender@a.test", "alice@c.test", "three relays"))
	if !strings.Contains(out, "<-  250 2.0.0") {
		t.Fatalf("a did not take the message; swaks:\n%s", out)
	}
	msg := waitMessage(t, c, "alice")
	header, _, _ := strings.Cut(msg, "\r\n\r\n")
	t.Logf("the message in alice's mailbox at c, header section:\n%s", strings.ReplaceAll(header, "\r\n", "\n"))

	if n := strings.Count(header, "\nAuthentication-Results: "); n != 2 {
		t.Errorf("%d Authentication-Results fields, want 2 (b's and c's; a originates it)", n)
	}
	for _, want := range []string{
		"Authentication-Results: c.test;\r\n\tdkim=pass header.d=a.test header.s=s1 header.a=rsa-sha256 header.b=",
		";\r\n\tspf=softfail smtp.mailfrom=sender@a.test;\r\n\tdmarc=pass (p=reject dis=none) header.from=a.test;\r\n\tarc=pass (i=1 d=b.test)\r\n",
		"ARC-Authentication-Results: i=2; c.test;\r\n\tdkim=pass header.d=a.test",
		"ARC-Seal: i=2; a=rsa-sha256;", " cv=pass;",
		"Authentication-Results: b.test;\r\n\tdkim=pass header.d=a.test header.s=s1 header.a=rsa-sha256 header.b=",
		";\r\n\tspf=pass smtp.mailfrom=sender@a.test;\r\n\tdmarc=pass (p=reject dis=none) header.from=a.test;\r\n\tarc=none\r\n",
		"ARC-Authentication-Results: i=1; b.test;\r\n\tdkim=pass header.d=a.test",
		"ARC-Seal: i=1; a=rsa-sha256;", " cv=none;",
		"DKIM-Signature: ",
	} {
		if !strings.Contains(header, want) {
			t.Errorf("header section lacks %q", want)
		}
	}
	// Each seal carries the verdicts of its relay's field, in order.
	for _, relay := range []string{"b.test", "c.test"} {
		ar := regexp.MustCompile(`(?s)\nAuthentication-Results: ` + regexp.QuoteMeta(relay) + `;(.*?)\r\n[^\t]`).FindStringSubmatch(header)
		aar := regexp.MustCompile(`(?s)\nARC-Authentication-Results: i=\d; ` + regexp.QuoteMeta(relay) + `;(.*?)\r\n[^\t]`).FindStringSubmatch(header)
		if ar == nil || aar == nil || ar[1] != aar[1] {
			t.Errorf("%s: Authentication-Results and ARC-Authentication-Results differ: %q vs %q", relay, ar, aar)
		}
	}
}
