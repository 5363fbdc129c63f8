package relay

import (
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/pop3d"
	"github.com/relay-mta/relay/relay/smtpd/smtptest"
)

// TestRelayAbuseBattery sends address forms that relays have been tricked
// with, from a client outside relay_networks; none may be accepted for a
// destination that is not local (docs/design.md §12). Each gets a 5xx.
func TestRelayAbuseBattery(t *testing.T) {
	cfg := testConfig(t)
	cfg.Aliases = []string{"[127.0.0.1]"}
	cfg.SMTP.TarpitAfter = 0 // each form has its own session anyway
	addr, _ := runRelay(t, cfg)
	forms := []struct{ rcpt, mailParams string }{
		{"<u@elsewhere.test>", ""},
		{"<U@ELSEWHERE.TEST>", ""},
		{"<u@elsewhere.test.>", ""},                 // trailing dot
		{"<u@b.test.>", ""},                         // trailing dot on our own name
		{"<@b.test:u@elsewhere.test>", ""},          // our name, then the target
		{"<@B.TEST:u@elsewhere.test>", ""},          // the same, upper case
		{"<@elsewhere.test:alice@b.test>", ""},      // through a third party
		{"<@b.test,@elsewhere.test:u@c.test>", ""},  // a longer route
		{"<@b.test,@b.test:u@elsewhere.test>", ""},  // our name twice
		{"<\"u@elsewhere.test\"@b.test>", ""},       // quoted '@'
		{"<\"u%elsewhere.test\"@b.test>", ""},       // quoted '%'
		{"<u%elsewhere.test@b.test>", ""},           // percent hack (off)
		{"<u%elsewhere.test@B.TEST>", ""},           // percent hack, upper case
		{"<postmaster%elsewhere.test@b.test>", ""},  // percent hack to a postmaster
		{"<elsewhere.test!u@b.test>", ""},           // bang path
		{"<\"elsewhere.test!u\"@b.test>", ""},       // quoted bang path
		{"<u@[192.0.2.1]>", ""},                     // address literal
		{"<u@[IPv6:2001:db8::1]>", ""},              // IPv6 literal
		{"<@[192.0.2.1]:u@b.test>", ""},             // literal hop
		{"<u@b.test.elsewhere.test>", ""},           // our name as a prefix
		{"<u@partner.test.evil.test>", ""},          // a relay domain as a prefix
		{"<u@elsewhere.test%b.test>", ""},           // '%' in the domain
		{"<postmaster@elsewhere.test>", ""},         // someone else's postmaster
		{"<\"postmaster\"@elsewhere.test>", ""},     // quoted
		{"<@b.test:postmaster@elsewhere.test>", ""}, // routed postmaster
		{"<>", ""},                          // the null path as a recipient
		{"<u@b.tеst>", ""},                  // Cyrillic 'е': a look-alike, without SMTPUTF8
		{"<u@b.tеst>", " SMTPUTF8"},         // the look-alike with SMTPUTF8
		{"<ü@elsewhere.test>", " SMTPUTF8"}, // UTF-8 local part elsewhere
		{"< u@elsewhere.test>", ""},         // a space inside the brackets
	}
	for _, f := range forms {
		c := smtptest.Dial(t, addr)
		c.Cmd("EHLO outside.test", "250 ")
		c.Cmd("MAIL FROM:<x@outside.test>"+f.mailParams, "250 ")
		got := c.Cmd("RCPT TO:"+f.rcpt, "")
		if !strings.HasPrefix(got, "5") {
			t.Errorf("RCPT TO:%s%s from outside: %q, want a 5xx", f.rcpt, f.mailParams, got)
		}
		c.Conn.Close()
	}
	if len(forms) < 25 {
		t.Fatalf("only %d forms", len(forms))
	}
	t.Logf("%d relay-abuse forms refused", len(forms))
}

// TestAuthenticatedSenderRestriction: an authenticated user may send as
// themselves, as <>, or from domains granted to them; nothing else.
func TestAuthenticatedSenderRestriction(t *testing.T) {
	cfg := testConfig(t)
	cfg.AllowInsecureAuth = true
	cfg.SenderDomains = map[string][]string{"alice": {"partner.test"}}
	addr, _ := runRelay(t, cfg)
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO client.test", "250 ")
	c.Cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice\x00pw-alice")), "235 ")
	for from, want := range map[string]string{
		"<alice@b.test>":         "250 ",
		"<ALICE@b.test>":         "250 ",
		"<>":                     "250 ",
		"<anyone@partner.test>":  "250 ",
		"<bob@b.test>":           "553 5.7.1",
		"<alice@elsewhere.test>": "553 5.7.1",
		"<@b.test:alice@b.test>": "553 5.7.1",
	} {
		c.Cmd("MAIL FROM:"+from, want)
		c.Cmd("RSET", "250 ")
	}
}

// TestLoginThrottling: each failed login is answered later than the one
// before, and after ten the address is banned (421 and the connection
// closed), also for the right password.
func TestLoginThrottling(t *testing.T) {
	cfg := testConfig(t)
	cfg.AllowInsecureAuth = true
	r, _ := launch(t, cfg, Options{}, func(r *Relay) { r.logins.base = 20 * time.Millisecond })
	addr := r.SMTPAddrs()[0]

	wrong := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00guess"))
	right := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00pw-alice"))
	var took []time.Duration
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO guesser.test", "250 ")
	for i := 0; i < 10; i++ {
		if i > 0 && i%5 == 0 { // max_errors would close the session first
			c = smtptest.Dial(t, addr)
			c.Cmd("EHLO guesser.test", "250 ")
		}
		start := time.Now()
		c.Cmd(wrong, "535 5.7.8")
		took = append(took, time.Since(start))
	}
	if took[0] < 20*time.Millisecond || took[3] < 160*time.Millisecond || took[3] <= took[1] {
		t.Fatalf("failed logins answered after %v: want growing delays from 20ms", took)
	}
	c = smtptest.Dial(t, addr)
	c.Cmd("EHLO guesser.test", "250 ")
	c.Cmd(right, "421 4.7.0")
	if _, err := c.R.ReadByte(); err == nil {
		t.Fatal("connection still open after 421")
	}
	t.Logf("failed logins answered after %v; then banned", took)
}

// TestReceivedHeaderSafety: what a client says (HELO) cannot add header
// lines to the message: the Received header stays one field.
func TestReceivedHeaderSafety(t *testing.T) {
	h := receivedHeader("x\r\nBcc: victim@example.test", "127.0.0.1", "b.test", "ESMTP", "ID", "<u@b.test>", time.Unix(0, 0))
	if strings.Count(string(h), "\r\n") != 4 || strings.Contains(string(h), "\r\nBcc:") {
		t.Fatalf("header injection: %q", h)
	}
}

// TestLoginThrottlingSharedWithPOP3: failed SMTP logins count for POP3
// too; a banned address cannot log in over either.
func TestLoginThrottlingSharedWithPOP3(t *testing.T) {
	l := newLoginLimiter()
	l.base = time.Millisecond
	ip := netip.MustParseAddr("127.0.0.9")
	for i := 0; i < loginBanAfter; i++ {
		l.failed(ip)
	}
	b := &pop3Backend{r: &Relay{logins: l, log: slog.New(slog.NewTextHandler(io.Discard, nil))}, inUse: map[string]bool{}}
	_, err := b.Login(pop3d.ConnInfo{RemoteAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}, "alice", "pw-alice")
	if !errors.Is(err, pop3d.ErrBlocked) {
		t.Fatalf("banned address over POP3: %v, want pop3d.ErrBlocked", err)
	}
}
