package relay

import (
	"net/netip"
	"strings"
	"testing"
)

// TestSourceRouteThroughRelayDomain is issue 18, item 2, as an attacker
// sends it: a backup relay for relayed.test must not accept, from a
// client that may not relay, a source route whose final destination is
// elsewhere, whichever relay domain (or our own name) it starts with.
// Routes that stay within our domains and relay domains are still
// accepted, and a relay_networks client may route anywhere.
func TestSourceRouteThroughRelayDomain(t *testing.T) {
	cfg := secConfig(t)
	cfg.RelayDomains = []string{"relayed.test"}
	cfg.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.20.12/32")}
	cfg.SMTP.TarpitAfter = 0
	r, _ := launch(t, cfg, Options{}, nil)
	addr := r.SMTPAddrs()[0]

	refused := []string{
		"<@relayed.test:victim@remote.test>",
		"<@relayed.test,@remote.test:victim@remote.test>",
		"<@RELAYED.TEST:victim@remote.test>",
		"<@relayed.test.:victim@remote.test>",
		"<@b.test,@relayed.test:victim@remote.test>",
		"<@b.test:@relayed.test:victim@remote.test>",
		"<@relayed.test:victim%remote.test@relayed.test>",
		"<@relayed.test:\"victim@remote.test\"@relayed.test>",
		"<@relayed.test:remote.test!victim@relayed.test>",
		"<@remote.test:u@relayed.test>",
		"<@relayed.test,@remote.test:u@relayed.test>",
		"<@remote.test,@relayed.test:u@relayed.test>",
		"<@relayed.test:victim@[192.0.2.1]>",
		"<@relayed.test:postmaster@remote.test>",
		"<@relayed.test:victim@relayed.test.remote.test>",
	}
	accepted := 0
	for _, rcpt := range refused {
		c := dialFrom(t, "127.0.20.11", addr, "220 ")
		c.Cmd("EHLO outside.test", "250 ")
		c.Cmd("MAIL FROM:<x@outside.test>", "250 ")
		got := c.Cmd("RCPT TO:"+rcpt, "")
		switch {
		case strings.HasPrefix(got, "2"):
			accepted++
			t.Errorf("outsider: RCPT TO:%s accepted: %q", rcpt, got)
		case strings.HasPrefix(got, "501 ") || strings.HasPrefix(got, "553 "): // not even a valid path
		case !strings.HasPrefix(got, "554 5.7.1"):
			t.Errorf("outsider: RCPT TO:%s: %q, want 554 5.7.1", rcpt, got)
		}
		c.Conn.Close()
	}
	t.Logf("route forms accepted from outside: %d of %d", accepted, len(refused))

	c := dialFrom(t, "127.0.20.11", addr, "220 ")
	c.Cmd("EHLO outside.test", "250 ")
	c.Cmd("MAIL FROM:<x@outside.test>", "250 ")
	for _, rcpt := range []string{"<u@relayed.test>", "<@relayed.test:u@relayed.test>", "<@b.test:alice@b.test>", "<@relayed.test:alice@b.test>"} {
		c.Cmd("RCPT TO:"+rcpt, "250 ")
	}

	c = dialFrom(t, "127.0.20.12", addr, "220 ")
	c.Cmd("EHLO inside.test", "250 ")
	c.Cmd("MAIL FROM:<x@inside.test>", "250 ")
	c.Cmd("RCPT TO:<@relayed.test:victim@remote.test>", "250 ")
}
