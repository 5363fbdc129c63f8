package relay

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/smtpd/smtptest"
	"github.com/relay-mta/relay/spool"
)

// TestHandoffAcrossFleet: the same message handed over by two relays of
// a fleet (the sender's retry after a lost 250 went to another MX) is
// stored once; the origin stays with it for the next hop.
func TestHandoffAcrossFleet(t *testing.T) {
	cfg := testConfig(t)
	cfg.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.Routes = []config.Route{{Domain: "*", To: "127.0.0.1:1", Host: "127.0.0.1", Port: 1, TLS: config.TLSNone}}
	addr, stop := runRelay(t, cfg)
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO mx1.test", "250 ")
	id1 := c.Send("<s@a.test>", []string{"<u@partner.test>"}, "X-Relay-Handoff: s.test 001ABCDEFGHJK via mx1.test 001BBBBBBBBBB\r\nSubject: once\r\n\r\nx\r\n")
	id2 := c.Send("<s@a.test>", []string{"<u@partner.test>"}, "X-Relay-Handoff: s.test 001ABCDEFGHJK via mx2.test 001CCCCCCCCCC\r\nSubject: once\r\n\r\nx\r\n")
	// Another message: a new origin.
	id3 := c.Send("<s@a.test>", []string{"<u@partner.test>"}, "X-Relay-Handoff: s.test 001DDDDDDDDDD via mx2.test 001EEEEEEEEEE\r\nSubject: twice\r\n\r\nx\r\n")
	stop()
	if id1 != id2 || id3 == id1 {
		t.Errorf("IDs %s %s %s: want the second to name the first, the third its own", id1, id2, id3)
	}
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(cfg.DataDir, "spool"), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	m, err := sp.Get(id1)
	if err != nil || m.Handoff != "s.test 001ABCDEFGHJK" {
		t.Fatalf("stored %+v, %v; want origin s.test 001ABCDEFGHJK", m, err)
	}
}

// TestHandoffTokens: a message that already passed through this relay
// starts a new origin here, whatever its field says.
func TestHandoffTokens(t *testing.T) {
	for _, c := range []struct {
		value, header, hop, origin string
	}{
		{"", "", "", ""},
		{"s.test 1", "Subject: x\r\n", "s.test 1", "s.test 1"},
		{"s.test 1 via mx1.test 2", "Subject: x\r\n", "mx1.test 2", "s.test 1"},
		{"s.test 1 via b.test 2", "Subject: x\r\n", "b.test 2", ""},
		{"s.test 1 via mx1.test 2", "Received: from x ([127.0.0.1])\r\n\tby b.test (relay) with ESMTP id 3;\r\n\tdate\r\n", "mx1.test 2", ""},
		{"s.test 1 via mx1.test 2", "Received: from x ([127.0.0.1])\r\n\tby c.test (relay) with ESMTP id 3;\r\n\tdate\r\n", "mx1.test 2", "s.test 1"},
	} {
		hop, origin := handoffTokens(c.value, "b.test", []byte(c.header))
		if hop != c.hop || origin != c.origin {
			t.Errorf("handoffTokens(%q, %q) = %q, %q; want %q, %q", c.value, c.header, hop, origin, c.hop, c.origin)
		}
	}
}
