package deliver

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/spool"
)

// TestDeliverLevelsPassedOn: MT-PRIORITY and BY go on to a next hop that
// advertises them (our own smtpd), BY with the time spent here taken off
// (RFC 2852 §4).
func TestDeliverLevelsPassedOn(t *testing.T) {
	srv := startSMTPD(t, "127.0.25.193", nil)
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	d := testDeliverer(nil, nil)
	d.Now = func() time.Time { return t0 }
	s := mustDial(t, d, plainHop(srv.addr))
	msg := func(id, params string, age time.Duration) *spool.Message {
		m := testMessage(id, "<s@a.test>", params)
		m.Received = t0.Add(-age)
		return m
	}
	checkReplies(t, mustSend(t, s, msg("L1", " MT-PRIORITY=5 BY=100;R", 30*time.Second+400*time.Millisecond), "<u@c.test>"), "250 ")
	checkReplies(t, mustSend(t, s, msg("L2", " MT-PRIORITY=-3 BY=10;NT", 30*time.Second), "<u@c.test>"), "250 ")
	checkReplies(t, mustSend(t, s, msg("L3", "", 0), "<u@c.test>"), "250 ")
	// A BY=;R deadline already passed is not sent on.
	checkReplies(t, mustSend(t, s, msg("L4", " BY=10;R", 10*time.Second), "<u@c.test>"), "554 5.4.7")
	_, _, msgs := srv.b.snapshot()
	if len(msgs) != 3 {
		t.Fatalf("next hop got %d messages, want 3", len(msgs))
	}
	want := []envelope.MailParams{
		{Priority: 5, ByMode: envelope.ByReturn, ByTime: 69},
		{Priority: -3, ByMode: envelope.ByNotify, ByTime: -20, ByTrace: true},
		{},
	}
	for i, m := range msgs {
		got := envelope.MailParams{Priority: m.params.Priority, ByMode: m.params.ByMode, ByTime: m.params.ByTime, ByTrace: m.params.ByTrace}
		if got != want[i] {
			t.Errorf("message %d: next hop saw%s, want%s", i+1, got.String(), want[i].String())
		}
	}
	t.Logf("next hop saw MAIL lines:\n%s", grepLines(srv.tap.commands(), "MAIL FROM"))

	// After STARTTLS the client talks through a new connection wrapper:
	// the parameters go on there too.
	cert, pool := selfSigned(t)
	secure := startSMTPD(t, "127.0.25.195", &cert)
	d = testDeliverer(nil, pool)
	d.Now = func() time.Time { return t0 }
	s = mustDial(t, d, queue.Hop{Key: "k", Addrs: []string{secure.addr}, TLS: "opportunistic"})
	if s.tls == nil {
		t.Fatal("no TLS")
	}
	checkReplies(t, mustSend(t, s, msg("T1", " MT-PRIORITY=2 BY=50;N", 5*time.Second), "<u@c.test>"), "250 ")
	_, _, msgs = secure.b.snapshot()
	if len(msgs) != 1 || !msgs[0].tls || msgs[0].params.Priority != 2 || msgs[0].params.ByTime != 45 {
		t.Errorf("over TLS the next hop got %+v", msgs)
	}
}

// TestDeliverLevelsToOldHop: a next hop that advertises neither
// MT-PRIORITY nor DELIVERBY gets neither parameter. BY=;R cannot keep its
// deadline there and is returned with 5.4.7 before MAIL; BY=;N is relayed
// and marked so that NOTIFY=SUCCESS gets a "relayed" DSN.
func TestDeliverLevelsToOldHop(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	addr, _ := scriptServer(t, "127.0.25.194", "220 old.test ESMTP", ehloScript([]string{"8BITMIME", "DSN", "SIZE 1000000"},
		func(line string) (string, bool, bool) {
			mu.Lock()
			lines = append(lines, line)
			mu.Unlock()
			return "", false, false
		}))
	s := mustDial(t, testDeliverer(nil, nil), plainHop(addr))
	now := time.Now()
	r := testMessage("O1", "<s@a.test>", " MT-PRIORITY=9 BY=600;R")
	r.Received = now
	checkReplies(t, mustSend(t, s, r, "<u@c.test>", "<v@c.test>"), "554 5.4.7", "554 5.4.7")
	n := testMessage("O2", "<s@a.test>", " MT-PRIORITY=9 BY=600;N")
	n.Received = now
	replies := mustSend(t, s, n, "<u@c.test>")
	checkReplies(t, replies, "250 ")
	if !replies[0].Relayed {
		t.Error("BY=;N relayed to a hop without DELIVERBY is not marked relayed")
	}
	p := testMessage("O3", "<s@a.test>", " MT-PRIORITY=9")
	if rs := mustSend(t, s, p, "<u@c.test>"); rs[0].Relayed {
		t.Error("an ordinary message to a DSN hop is marked relayed")
	}
	mu.Lock()
	defer mu.Unlock()
	var mails []string
	for _, l := range lines {
		if strings.HasPrefix(l, "MAIL FROM") {
			mails = append(mails, l)
		}
	}
	if len(mails) != 2 {
		t.Fatalf("MAIL commands %q, want 2 (none for the BY=;R message)", mails)
	}
	for _, m := range mails {
		if strings.Contains(m, "BY=") || strings.Contains(m, "MT-PRIORITY") {
			t.Errorf("a hop without the extensions got %q", m)
		}
	}
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\r\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
