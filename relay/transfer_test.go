package relay

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/smtpd/smtptest"
	"github.com/relay-mta/relay/spool"
)

// TestTransferCarriesEnvelope: a transferred message arrives at the other
// relay with its remaining recipients (not the local one), DSN
// parameters, priority and origin token, and leaves this queue with a
// "transferred" event.
func TestTransferCarriesEnvelope(t *testing.T) {
	down := []config.Route{{Domain: "*", To: "127.0.0.1:1", Host: "127.0.0.1", Port: 1, TLS: config.TLSNone}}
	bCfg := testConfig(t)
	bCfg.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	bCfg.Routes = down
	bAddr, stopB := runRelay(t, bCfg)

	aCfg := testConfig(t)
	aCfg.Hostname, aCfg.LocalDomains = "a.test", []string{"a.test"}
	aCfg.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	aCfg.Routes = down
	a, _ := launch(t, aCfg, Options{}, nil)
	c := smtptest.Dial(t, a.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250 ")
	id := c.Send("<s@a.test> RET=HDRS ENVID=env1 MT-PRIORITY=3",
		[]string{"<u@partner.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@partner.test", "<v@partner.test>", "<alice@a.test>"},
		"Subject: moving\r\n\r\nbody\r\n")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	changes, err := a.Transfer(ctx, bAddr, []string{id}, false)
	if err != nil || len(changes) != 1 || changes[0].Recipients != 2 {
		t.Fatalf("Transfer: %+v, %v; want 2 recipients of %s transferred", changes, err, id)
	}
	// The local recipient stayed: delivered into a's mailbox, and then
	// the message retired.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		entries, err := a.Spool().Mailbox("alice")
		if err == nil && len(entries) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's mailbox at a: %d entries, %v; want the message", len(entries), err)
		}
	}
	h, err := a.Spool().History(id)
	if err != nil {
		t.Fatal(err)
	}
	var ev string
	for _, e := range h.Events {
		if e.Kind == spool.EventTransferred {
			ev = e.Text
		}
	}
	if !strings.Contains(ev, bAddr) || !strings.Contains(ev, "2 recipients") {
		t.Errorf("transferred event %q; want one naming %s and 2 recipients", ev, bAddr)
	}
	// Again: nothing left to transfer.
	if changes, _ := a.Transfer(ctx, bAddr, []string{id}, false); len(changes) != 1 || changes[0].Recipients != 0 {
		t.Errorf("second transfer: %+v", changes)
	}

	stopB()
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(bCfg.DataDir, "spool"), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	var got []*spool.Message
	sp.List(func(m *spool.Message) error { got = append(got, m); return nil })
	if len(got) != 1 {
		t.Fatalf("b has %d messages, want 1", len(got))
	}
	m := got[0]
	if !strings.Contains(m.MailParams, "RET=HDRS") || !strings.Contains(m.MailParams, "ENVID=env1") || m.Priority != 3 {
		t.Errorf("b's envelope: params %q, priority %d; want RET=HDRS ENVID=env1, priority 3", m.MailParams, m.Priority)
	}
	if len(m.Recipients) != 2 || !strings.Contains(m.Recipients[0].Params, "NOTIFY=SUCCESS,FAILURE") || !strings.Contains(m.Recipients[0].Params, "ORCPT=rfc822;u@partner.test") {
		t.Errorf("b's recipients: %+v", m.Recipients)
	}
	if m.Handoff != "a.test "+id {
		t.Errorf("b's origin token %q, want %q", m.Handoff, "a.test "+id)
	}
}

// TestTransferToNobody: with nothing listening at the target, nothing
// moves, no message is left held, and every message says why.
func TestTransferToNobody(t *testing.T) {
	cfg := testConfig(t)
	cfg.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.Routes = []config.Route{{Domain: "*", To: "127.0.0.1:1", Host: "127.0.0.1", Port: 1, TLS: config.TLSNone}}
	a, _ := launch(t, cfg, Options{}, nil)
	c := smtptest.Dial(t, a.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250 ")
	ids := []string{c.Send("<s@b.test>", []string{"<u@partner.test>"}, "Subject: 1\r\n\r\nx\r\n"),
		c.Send("<s@b.test>", []string{"<u@partner.test>"}, "Subject: 2\r\n\r\nx\r\n")}
	changes, err := a.Transfer(context.Background(), "127.0.0.1:1", nil, true)
	if err != nil || len(changes) != 2 {
		t.Fatalf("Transfer: %+v, %v", changes, err)
	}
	for _, ch := range changes {
		if ch.Recipients != 0 || !strings.HasPrefix(ch.Result, "not transferred: ") {
			t.Errorf("%s: %+v; want not transferred, with the reason", ch.ID, ch)
		}
	}
	for _, id := range ids {
		if m, err := a.Spool().Get(id); err != nil || m.Held {
			t.Errorf("%s after a failed transfer: %+v, %v; want queued, not held", id, m, err)
		}
	}
}

// TestDrainStopsAccepting: a drained relay with an empty queue closes its
// SMTP listener and its Run returns by itself.
func TestDrainStopsAccepting(t *testing.T) {
	cfg := testConfig(t)
	r, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Listen(); err != nil {
		t.Fatal(err)
	}
	addr := r.SMTPAddrs()[0]
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	d, err := r.Drain("")
	if err != nil || d.Queued != 0 || !strings.Contains(d.Result, "draining") {
		t.Fatalf("Drain: %+v, %v", d, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the drain")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the drain", addr)
	}
	if _, err := r.Drain("no-port"); err == nil {
		t.Error("Drain accepted a target without a port")
	}
}
