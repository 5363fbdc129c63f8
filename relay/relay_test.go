package relay

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/smtpd/smtptest"
	"github.com/relay-mta/relay/relay/users"
	"github.com/relay-mta/relay/spool"
	"golang.org/x/crypto/bcrypt"
)

// testConfig is a relay "b.test" on a free loopback port with the users
// alice and bob; relay_networks is empty unless the test sets it, so the
// test client is an outsider.
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Hostname = "b.test"
	cfg.DataDir = t.TempDir()
	cfg.LocalDomains = []string{"b.test"}
	cfg.RelayDomains = []string{"partner.test"}
	cfg.RelayNetworks = nil
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.POP3.Listen = nil
	cfg.Admin.Socket = ""
	cfg.UsersFile = filepath.Join(cfg.DataDir, "users")
	for _, u := range []string{"alice", "bob"} {
		if err := users.Add(cfg.UsersFile, u, "pw-"+u, bcrypt.MinCost); err != nil {
			t.Fatal(err)
		}
	}
	return cfg
}

// launch starts a relay (adjust, if set, runs before it listens) and
// returns it with a stop function that shuts it down cleanly and waits;
// stop also runs when the test ends.
func launch(t *testing.T, cfg *config.Config, opts Options, adjust func(*Relay)) (*Relay, func()) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if adjust != nil {
		adjust(r)
	}
	if err := r.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return r, stop
}

// runRelay starts a relay and returns its SMTP address and a stop function.
func runRelay(t *testing.T, cfg *config.Config) (string, func()) {
	t.Helper()
	r, stop := launch(t, cfg, Options{}, nil)
	return r.SMTPAddrs()[0], stop
}

func TestOpenRelayRefused(t *testing.T) {
	cfg := testConfig(t)
	cfg.Aliases = []string{"[127.0.0.1]"}
	addr, _ := runRelay(t, cfg)
	session := func() *smtptest.Client {
		c := smtptest.Dial(t, addr)
		c.Cmd("EHLO outside.test", "250 ")
		c.Cmd("MAIL FROM:<x@outside.test>", "250 ")
		return c
	}
	for _, rcpt := range []string{
		"<u@elsewhere.test>",
		"<U@ELSEWHERE.TEST>",
		"<@b.test:u@elsewhere.test>",     // our name, then the real target
		"<@elsewhere.test:alice@b.test>", // route through a third party
		"<@b.test,@elsewhere.test:u@c.test>",
		"<\"u@elsewhere.test\"@b.test>", // quoted '@'
		"<\"u%elsewhere.test\"@b.test>", // quoted '%'
		"<u%elsewhere.test@b.test>",     // percent hack (off by default)
		"<elsewhere.test!u@b.test>",     // bang path
		"<u@[192.0.2.1]>",               // address literal
		"<u@[IPv6:2001:db8::1]>",
		"<@[192.0.2.1]:u@b.test>",
		"<u@b.test.elsewhere.test>",
		"<u@partner.test.evil.test>",
	} {
		// A session per refusal: refusals count towards max_errors.
		session().Cmd("RCPT TO:"+rcpt, "554 5.7.1")
	}
	// What an outsider may do.
	c := session()
	c.Cmd("RCPT TO:<alice@b.test>", "250 ")
	c.Cmd("RCPT TO:<ALICE@B.Test>", "250 ")
	c.Cmd("RCPT TO:<postmaster>", "250 ")
	c.Cmd("RCPT TO:<postmaster@b.test>", "250 ")
	c.Cmd("RCPT TO:<u@partner.test>", "250 ")
	c.Cmd("RCPT TO:<@b.test:bob@b.test>", "250 ") // a route through us alone
	c.Cmd("RCPT TO:<carol@b.test>", "550 5.1.1")
}

func TestRelayClientsMayRelay(t *testing.T) {
	cfg := testConfig(t)
	cfg.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	addr, _ := runRelay(t, cfg)
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO inside.test", "250 ")
	c.Cmd("MAIL FROM:<x@inside.test>", "250 ")
	c.Cmd("RCPT TO:<u@elsewhere.test>", "250 ")
	c.Cmd("RCPT TO:<@c.test,@d.test:u@e.test>", "250 ")
	c.Cmd("RCPT TO:<carol@b.test>", "550 5.1.1") // still no such local user
}

func TestAuthenticatedClientsMayRelay(t *testing.T) {
	cfg := testConfig(t)
	cfg.AllowInsecureAuth = true
	addr, _ := runRelay(t, cfg)
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO outside.test", "250 ")
	c.Cmd("AUTH PLAIN AGFsaWNlAHdyb25n", "535 5.7.8") // alice / wrong
	c.Cmd("MAIL FROM:<alice@b.test>", "250 ")
	c.Cmd("RCPT TO:<u@elsewhere.test>", "554 5.7.1")
	c.Cmd("RSET", "250 ")
	c.Cmd("AUTH PLAIN AGFsaWNlAHB3LWFsaWNl", "235 2.7.0") // alice / pw-alice
	c.Cmd("MAIL FROM:<alice@b.test>", "250 ")
	c.Cmd("RCPT TO:<u@elsewhere.test>", "250 ")
}

func TestHopLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxHops = 5
	addr, _ := runRelay(t, cfg)
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO a.test", "250 ")
	hdrs := strings.Repeat("Received: from x by y; Sat, 21 Nov 2026 09:00:00 +0000\r\n", 4)
	c.Send("<a@a.test>", []string{"<alice@b.test>"}, hdrs+"Subject: four hops\r\n\r\nok\r\n")
	c.Cmd("MAIL FROM:<a@a.test>", "250 ")
	c.Cmd("RCPT TO:<alice@b.test>", "250 ")
	c.Cmd("DATA", "354 ")
	c.Cmd(hdrs+"Received: from z by y; Sat, 21 Nov 2026 09:00:00 +0000\r\nSubject: five\r\n\r\nloop\r\n.", "554 5.4.6")
}

// TestAcceptedSurviveRestart sends messages, stops the relay cleanly, and
// finds every accepted message in the spool byte-exact with a Received
// header in front.
func TestAcceptedSurviveRestart(t *testing.T) {
	cfg := testConfig(t)
	// Mail for partner.test goes to a closed port: it stays queued.
	cfg.Routes = []config.Route{{Domain: "*", To: "127.0.0.1:1", Host: "127.0.0.1", Port: 1, TLS: config.TLSNone}}
	addr, stop := runRelay(t, cfg)
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO client.test", "250 ")
	bodies := map[string]string{}
	for i := 0; i < 20; i++ {
		body := "Subject: restart " + strings.Repeat("x", i) + "\r\n\r\nbody\r\n"
		bodies[c.Send("<a@client.test>", []string{"<u@partner.test>"}, body)] = body
	}
	stop()

	sp, err := spool.Open(spool.Options{Dir: filepath.Join(cfg.DataDir, "spool")})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	for id, want := range bodies {
		got, err := sp.Body(id)
		if err != nil {
			t.Fatalf("message %s lost: %v", id, err)
		}
		if !strings.HasSuffix(string(got), want) {
			t.Errorf("message %s changed: %q", id, got)
		}
		hdr := string(got[:len(got)-len(want)])
		if !strings.HasPrefix(hdr, "Received: from client.test ([127.0.0.1])\r\n\tby b.test (relay) with ESMTP id "+id+"\r\n\tfor <u@partner.test>;") {
			t.Errorf("Received header = %q", hdr)
		}
		m, err := sp.Get(id)
		if err != nil || m.From != "<a@client.test>" || len(m.Recipients) != 1 || m.Recipients[0].To != "<u@partner.test>" || m.Helo != "client.test" {
			t.Errorf("envelope of %s = %+v, %v", id, m, err)
		}
	}
}

func TestDefaultsAcceptPostmaster(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.Admin.Socket = ""
	cfg.UsersFile = filepath.Join(cfg.DataDir, "users")
	if _, err := os.Stat(cfg.UsersFile); err == nil {
		t.Fatal("fresh data dir has a users file")
	}
	addr, _ := runRelay(t, cfg)
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO client.test", "250 ")
	c.Send("<a@client.test>", []string{"<postmaster@localhost>"}, "Subject: hi\r\n\r\nhello\r\n")
}

func TestHeaderSafe(t *testing.T) {
	h := string(receivedHeader("evil\x01(x);\x7fname", "127.0.0.1", "b.test", "ESMTP", "ID1", "", time.Unix(0, 0).UTC()))
	if strings.ContainsAny(strings.ReplaceAll(strings.ReplaceAll(h, "\r\n\t", ""), "\r\n", ""), "\x01\x7f\r\n") {
		t.Errorf("control characters in %q", h)
	}
	if !strings.Contains(h, "from evil??x???name ([127.0.0.1])") {
		t.Errorf("header = %q", h)
	}
}

// TestHandoffTokenTrustedOnlyFromRelays: a re-send with the same hand-off
// token from a relay client is not stored twice; from an outsider the
// token is ignored (and never stored with the message).
func TestHandoffTokenTrustedOnlyFromRelays(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		cfg := testConfig(t)
		if trusted {
			cfg.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		}
		cfg.Routes = []config.Route{{Domain: "*", To: "127.0.0.1:1", Host: "127.0.0.1", Port: 1, TLS: config.TLSNone}}
		addr, stop := runRelay(t, cfg)
		c := smtptest.Dial(t, addr)
		c.Cmd("EHLO a.test", "250 ")
		msg := "X-Relay-Handoff: a.test 001ABCDEFGHJK\r\nSubject: once\r\n\r\nx\r\n"
		id1 := c.Send("<s@a.test>", []string{"<u@partner.test>"}, msg)
		id2 := c.Send("<s@a.test>", []string{"<u@partner.test>"}, msg)
		stop()
		sp, err := spool.Open(spool.Options{Dir: filepath.Join(cfg.DataDir, "spool"), GCInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		sp.List(func(m *spool.Message) error {
			n++
			b, _ := sp.Body(m.ID)
			if strings.Contains(string(b), "X-Relay-Handoff") {
				t.Errorf("hand-off field stored with the message: %q", b)
			}
			return nil
		})
		sp.Close()
		switch {
		case trusted && (id1 != id2 || n != 1):
			t.Errorf("relay client re-send: ids %s %s, %d stored; want one copy under one ID", id1, id2, n)
		case !trusted && (id1 == id2 || n != 2):
			t.Errorf("outsider: ids %s %s, %d stored; want two copies", id1, id2, n)
		}
	}
}
