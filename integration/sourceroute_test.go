package integration

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/smtpd/smtptest"
	"github.com/relay-mta/relay/spool"
)

// routeNet is four relays A, B, C, D on their own addresses, each routing
// the next one's domain to it (B to C through a fault link), and every
// relay routing a.test back to A for bounces.
type routeNet struct {
	a, b, c, d *node
	bc         *Link
}

func newRouteNet(t *testing.T, base int, adjustB func(*config.Config)) *routeNet {
	ip := func(i int) string { return "127.0.0." + strconv.Itoa(base+i) }
	n := &routeNet{a: newNode(t, "a", ip(1)), b: newNode(t, "b", ip(2)), c: newNode(t, "c", ip(3)), d: newNode(t, "d", ip(4))}
	n.d.route("a.test", n.a.addr)
	n.d.start()
	n.c.route("d.test", n.d.addr)
	n.c.route("a.test", n.a.addr)
	n.c.start()
	n.bc = link(t, ip(2), n.c)
	n.b.route("c.test", n.bc.Addr())
	n.b.route("d.test", n.d.addr) // used only when B strips routes
	n.b.route("a.test", n.a.addr)
	if adjustB != nil {
		adjustB(n.b.cfg)
	}
	n.b.start()
	n.a.route("b.test", n.b.addr)
	n.a.start()
	return n
}

var receivedRE = regexp.MustCompile(`(?m)^Received: from .*\r\n\tby (\S+) \(relay\) with \S+ id \S+(?:\r\n\tfor (\S+))?;`)

// trace returns "by-host for-path" of each Received header, newest first.
func trace(msg []byte) []string {
	var out []string
	for _, m := range receivedRE.FindAllSubmatch(msg, -1) {
		out = append(out, string(m[1])+" "+string(m[2]))
	}
	return out
}

func TestSourceRouteAcrossFourRelays(t *testing.T) {
	n := newRouteNet(t, 100, nil)
	sendDSN(t, n.a.addr, "alice@a.test", "@b.test,@c.test:alice@d.test", nil, nil)
	waitFor(t, 20*time.Second, "the message in alice's mailbox at D", func() bool { return len(n.d.mailboxRaw("alice")) == 1 })
	got := trace(n.d.mailboxRaw("alice")[0])
	want := []string{
		"d.test <alice@d.test>",                 // C forwarded the mailbox alone
		"c.test <@c.test:alice@d.test>",         // B stripped itself
		"b.test <@b.test,@c.test:alice@d.test>", // A forwarded the route untouched
		"a.test <@b.test,@c.test:alice@d.test>",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("Received trace at D:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSourceRoutePartitionAndHeal(t *testing.T) {
	n := newRouteNet(t, 110, nil)
	n.bc.Cut()
	sendDSN(t, n.a.addr, "alice@a.test", "@b.test,@c.test:alice@d.test", nil, nil)
	waitFor(t, 20*time.Second, "the message deferred at B", func() bool {
		q := n.b.queued()
		return len(q) == 1 && q[0].Recipients[0].Status == spool.StatusDeferred && q[0].Recipients[0].To == "<@b.test,@c.test:alice@d.test>"
	})
	n.bc.Heal()
	waitFor(t, 20*time.Second, "the message at D", func() bool { return len(n.d.mailboxRaw("alice")) >= 1 })
	time.Sleep(500 * time.Millisecond)
	if k := len(n.d.mailboxRaw("alice")); k != 1 {
		t.Fatalf("%d copies at D, want exactly 1", k)
	}
}

func TestSourceRouteUnknownHopBounces(t *testing.T) {
	n := newRouteNet(t, 120, nil)
	sendDSN(t, n.a.addr, "alice@a.test", "@b.test,@nowhere.test:alice@d.test", nil, nil)
	waitFor(t, 20*time.Second, "a DSN for alice at A", func() bool { return len(n.a.mailboxRaw("alice")) == 1 })
	raw := n.a.mailboxRaw("alice")[0]
	raw = raw[bytes.Index(raw, []byte("\r\nFrom: "))+2:]
	perMsg, perRcpt, _ := statusFields(t, raw)
	if perMsg.Get("Reporting-Mta") != "dns; b.test" || perRcpt.Get("Action") != "failed" ||
		!strings.Contains(perRcpt.Get("Diagnostic-Code"), "nowhere.test") || perRcpt.Get("Final-Recipient") != "rfc822; alice@d.test" {
		t.Fatalf("DSN does not name the failing hop: %v / %v", perMsg, perRcpt)
	}
}

func TestSourceRouteStripMode(t *testing.T) {
	n := newRouteNet(t, 130, func(c *config.Config) { c.SourceRoutes = config.SourceRoutesStrip })
	sendDSN(t, n.a.addr, "alice@a.test", "@b.test,@c.test:alice@d.test", nil, nil)
	waitFor(t, 20*time.Second, "the message at D", func() bool { return len(n.d.mailboxRaw("alice")) == 1 })
	got := trace(n.d.mailboxRaw("alice")[0])
	if len(got) != 3 || got[0] != "d.test <alice@d.test>" || !strings.HasPrefix(got[1], "b.test ") {
		t.Fatalf("with strip, B should send straight to D; trace:\n%s", strings.Join(got, "\n"))
	}
	if accepted, _ := n.bc.Stats(); accepted != 0 {
		t.Fatalf("B contacted C %d times despite strip", accepted)
	}
}

func TestSourceRouteRejectMode(t *testing.T) {
	n := newRouteNet(t, 140, func(c *config.Config) { c.SourceRoutes = config.SourceRoutesReject })
	c := smtptest.Dial(t, n.b.addr)
	c.Cmd("EHLO a.test", "250 ")
	c.Cmd("MAIL FROM:<alice@a.test>", "250 ")
	c.Cmd("RCPT TO:<@b.test,@c.test:alice@d.test>", "550 5.7.1")
	c.Cmd("RCPT TO:<@c.test:alice@d.test>", "550 5.7.1")
	c.Cmd("RCPT TO:<@b.test:alice@b.test>", "250 ") // only our own name: no route left
}

func TestPercentHack(t *testing.T) {
	for _, on := range []bool{true, false} {
		n := newRouteNet(t, map[bool]int{true: 150, false: 160}[on], func(c *config.Config) { c.PercentHack = on })
		c := smtptest.Dial(t, n.b.addr)
		c.Cmd("EHLO a.test", "250 ")
		c.Cmd("MAIL FROM:<alice@a.test>", "250 ")
		if !on {
			// Off: '%' is an ordinary character of a local part.
			c.Cmd("RCPT TO:<alice%d.test@b.test>", "550 5.1.1")
			continue
		}
		c.Cmd("RCPT TO:<alice%d.test@b.test>", "250 ")
		c.Cmd("DATA", "354 ")
		c.Cmd("Subject: percent\r\n\r\nhi\r\n.", "250 ")
		waitFor(t, 20*time.Second, "the message at D", func() bool { return len(n.d.mailboxRaw("alice")) == 1 })
		if got := trace(n.d.mailboxRaw("alice")[0]); got[0] != "d.test <alice@d.test>" || got[1] != "b.test <alice%d.test@b.test>" {
			t.Fatalf("percent hack trace:\n%s", strings.Join(got, "\n"))
		}
	}
}
