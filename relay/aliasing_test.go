package relay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/aliases"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/smtpd/smtptest"
	"github.com/relay-mta/relay/spool"
)

// aliasRelay runs b.test and c.test (local) with the aliases below;
// remote mail waits in the queue (its route goes to a closed port).
func aliasRelay(t *testing.T) (*Relay, *config.Config) {
	t.Helper()
	cfg := queuedConfig(t)
	cfg.SMTP.Listen = []string{"127.0.23.7:0"}
	cfg.Routes[0].To, cfg.Routes[0].Host = "127.0.23.7:1", "127.0.23.7"
	cfg.LocalDomains = []string{"b.test", "c.test"}
	cfg.RecipientDelimiter = "+"
	cfg.AliasesFile = filepath.Join(cfg.DataDir, "aliases")
	writeAliases(t, cfg.AliasesFile, `sales: alice, bob
fwd: alice, carol@remote.test
ghost: nobody-here
one: bob
pair: carol@remote.test, dan@remote.test
solo: erin@remote.test
loop1: loop2
loop2: loop1
@c.test: alice
`)
	r, _ := launch(t, cfg, Options{}, nil)
	return r, cfg
}

func writeAliases(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Minute) // older than the racy window
	os.Chtimes(path, old, old)
}

// rcptsOf returns the stored recipients of a queued message.
func rcptsOf(t *testing.T, r *Relay, id string) []spool.Recipient {
	t.Helper()
	m, err := r.Spool().Get(id)
	if err != nil {
		t.Fatalf("message %s: %v", id, err)
	}
	return m.Recipients
}

func TestAliasesAtRcpt(t *testing.T) {
	r, _ := aliasRelay(t)
	c := smtptest.Dial(t, r.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250 ")
	c.Cmd("MAIL FROM:<x@outside.test>", "250 ")
	c.Cmd("RCPT TO:<nobody@b.test>", "550 5.1.1")
	c.Cmd("RCPT TO:<loop1@b.test>", "554 5.4.6")
	c.Cmd("RCPT TO:<nobody+x@b.test>", "550 5.1.1")
	c.Cmd("RCPT TO:<fwd@b.test>", "250 ")                            // alice, carol@remote.test
	c.Cmd("RCPT TO:<Alice+News@B.test> NOTIFY=SUCCESS", "250 ")      // alice again: stored once
	c.Cmd("RCPT TO:<anyone@c.test>", "250 ")                         // catch-all: alice@c.test
	c.Cmd("RCPT TO:<one@b.test> ORCPT=rfc822;team+40x.test", "250 ") // bob, the client's ORCPT kept
	c.Cmd("DATA", "354 ")
	id := strings.TrimPrefix(strings.TrimSpace(c.Cmd("Subject: aliases\r\n\r\nhi\r\n.", "250 ")), "250 2.0.0 OK: queued as ")

	got := map[string]string{}
	for _, rc := range rcptsOf(t, r, id) {
		got[rc.To] = rc.Params
	}
	want := map[string]string{
		"<alice@b.test>":      " ORCPT=rfc822;fwd@b.test",
		"<carol@remote.test>": " ORCPT=rfc822;fwd@b.test",
		"<alice@c.test>":      " ORCPT=rfc822;anyone@c.test",
		"<bob@b.test>":        " ORCPT=rfc822;team@x.test",
	}
	if len(got) != len(want) {
		t.Errorf("stored recipients %v, want %v", got, want)
	}
	for to, p := range want {
		if got[to] != p {
			t.Errorf("recipient %s: params %q, want %q (all: %v)", to, got[to], p, got)
		}
	}
	// Each mailbox gets its copy once, addressed to the mailbox.
	waitUntil(t, "local deliveries", func() bool {
		a, _ := r.Spool().Mailbox("alice")
		b, _ := r.Spool().Mailbox("bob")
		return len(a) == 2 && len(b) == 1
	})
	for _, m := range mailboxMessages(t, r, "alice", 2) {
		if !strings.Contains(m, "Delivered-To: alice@") {
			t.Errorf("alice's copy:\n%s", m)
		}
	}
}

// An alias of several addresses: NOTIFY=SUCCESS is not passed on
// (RFC 3461 §6.2.7.3), FAILURE and DELAY are, and every target has the
// alias as ORCPT; a one-address alias passes NOTIFY on whole.
func TestAliasNotify(t *testing.T) {
	r, _ := aliasRelay(t)
	c := smtptest.Dial(t, r.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250 ")
	c.Cmd("MAIL FROM:<x@outside.test>", "250 ")
	c.Cmd("RCPT TO:<fwd@b.test> NOTIFY=SUCCESS,FAILURE", "250 ")
	c.Cmd("DATA", "354 ")
	id := strings.TrimPrefix(strings.TrimSpace(c.Cmd("Subject: n\r\n\r\nhi\r\n.", "250 ")), "250 2.0.0 OK: queued as ")
	for _, rc := range rcptsOf(t, r, id) {
		want := " NOTIFY=FAILURE ORCPT=rfc822;fwd@b.test"
		if rc.Expanded {
			want = " NOTIFY=SUCCESS,FAILURE" // the alias itself, for its "expanded" DSN
		}
		if rc.Params != want || rc.Expanded != (rc.To == "<fwd@b.test>") {
			t.Errorf("%s: params %q, expanded %v", rc.To, rc.Params, rc.Expanded)
		}
	}
	c.Cmd("MAIL FROM:<x@outside.test>", "250 ")
	c.Cmd("RCPT TO:<pair@b.test> NOTIFY=SUCCESS", "250 ")
	c.Cmd("RCPT TO:<solo@b.test> NOTIFY=SUCCESS,DELAY", "250 ")
	c.Cmd("DATA", "354 ")
	id = strings.TrimPrefix(strings.TrimSpace(c.Cmd("Subject: n2\r\n\r\nhi\r\n.", "250 ")), "250 2.0.0 OK: queued as ")
	want := map[string]string{
		"<pair@b.test>":       " NOTIFY=SUCCESS",
		"<carol@remote.test>": " NOTIFY=NEVER ORCPT=rfc822;pair@b.test",
		"<dan@remote.test>":   " NOTIFY=NEVER ORCPT=rfc822;pair@b.test",
		"<erin@remote.test>":  " NOTIFY=SUCCESS,DELAY ORCPT=rfc822;solo@b.test",
	}
	for _, rc := range rcptsOf(t, r, id) {
		if rc.Params != want[rc.To] {
			t.Errorf("%s: params %q, want %q", rc.To, rc.Params, want[rc.To])
		}
	}
	// The sender hears once per alias of several that it was expanded
	// (RFC 3461 §6.2.7.3): two DSNs, fwd and pair, waiting for the
	// route to outside.test.
	var dsns []string
	waitUntil(t, "the expanded DSNs", func() bool {
		dsns = dsns[:0]
		r.Spool().List(func(m *spool.Message) error {
			if m.From == "<>" {
				b, _ := r.Spool().Body(m.ID)
				dsns = append(dsns, string(b))
			}
			return nil
		})
		return len(dsns) == 2
	})
	for _, d := range dsns {
		if !strings.Contains(d, "Action: expanded") || !strings.Contains(d, "Status: 2.1.5") ||
			!strings.Contains(d, "Final-Recipient: rfc822; fwd@b.test") && !strings.Contains(d, "Final-Recipient: rfc822; pair@b.test") {
			t.Errorf("DSN:\n%s", d)
		}
	}
}

// A target that names nothing here fails with a DSN to the sender whose
// Original-Recipient is the alias (RFC 3461 §6.2.7), and a DSN to a
// sender that is an alias reaches the addresses behind it.
func TestAliasDSNKeepsORCPT(t *testing.T) {
	r, cfg := aliasRelay(t)
	cfg.RelayNetworks = nil
	c := smtptest.Dial(t, r.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250 ")
	c.Cmd("MAIL FROM:<sales@b.test>", "250 ")
	c.Cmd("RCPT TO:<ghost@b.test>", "250 ")
	c.Cmd("DATA", "354 ")
	c.Cmd("Subject: to a ghost\r\n\r\nhi\r\n.", "250 ")
	// sales is alice and bob: each gets the bounce.
	for _, user := range []string{"alice", "bob"} {
		dsn := mailboxMessages(t, r, user, 1)[0]
		for _, want := range []string{"Final-Recipient: rfc822; nobody-here@b.test", "Original-Recipient: rfc822; ghost@b.test", "Action: failed", "Status: 5.1.1"} {
			if !strings.Contains(dsn, want) {
				t.Errorf("%s's DSN lacks %q:\n%s", user, want, dsn)
			}
		}
	}
}

// The relay follows the aliases file as it does the users file.
func TestAliasesReload(t *testing.T) {
	r, cfg := aliasRelay(t)
	try := func(rcpt, want string) {
		c := smtptest.Dial(t, r.SMTPAddrs()[0])
		c.Cmd("EHLO client.test", "250 ")
		c.Cmd("MAIL FROM:<x@outside.test>", "250 ")
		c.Cmd("RCPT TO:"+rcpt, want)
	}
	try("<newalias@b.test>", "550 5.1.1")
	// The running relay notices the new file by itself.
	writeAliases(t, cfg.AliasesFile, "newalias: bob\n")
	waitUntil(t, "the new alias", func() bool {
		return r.aliases.IsAlias(aliases.Address{Local: "newalias", Domain: "b.test"})
	})
	try("<newalias@b.test>", "250 ")
	try("<sales@b.test>", "550 5.1.1")
	writeAliases(t, cfg.AliasesFile, "broken line\n")
	if err := r.ReloadAliases(); err == nil || !strings.Contains(err.Error(), "aliases:1:") {
		t.Fatalf("broken file: %v", err)
	}
	try("<newalias@b.test>", "250 ") // the aliases in force stay
}
