package integration

import (
	"net"
	"net/textproto"
	"slices"
	"testing"
	"time"

	"github.com/relay-mta/relay/spool"
)

// sendWithPriority submits one message with MAIL FROM ... MT-PRIORITY=p.
func sendWithPriority(t *testing.T, addr, to, subject string, p int) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	tc := textproto.NewConn(nc)
	step := func(code int, format string, args ...any) {
		t.Helper()
		if format != "" {
			if err := tc.PrintfLine(format, args...); err != nil {
				t.Fatal(err)
			}
		}
		if _, msg, err := tc.ReadResponse(code); err != nil {
			t.Fatalf("%q: %v %s", format, err, msg)
		}
	}
	step(220, "")
	step(250, "EHLO client.test")
	step(250, "MAIL FROM:<sender@a.test> MT-PRIORITY=%d", p)
	step(250, "RCPT TO:<%s>", to)
	step(354, "DATA")
	step(250, "Subject: %s\r\n\r\nurgent\r\n.", subject)
	step(221, "QUIT")
}

// TestPriorityAcrossBacklog (issue 19): 1,000 priority-0 messages are
// deferred behind a cut link, then one MT-PRIORITY=9 message; once the
// link heals, the urgent one is among the first 20 delivered.
func TestPriorityAcrossBacklog(t *testing.T) {
	a, b, l := shapedPair(t, "127.0.27.30", "127.0.27.31", nil)
	l.Cut()
	sendMany(t, a.addr, "low", 1000)
	sendWithPriority(t, a.addr, "alice@b.test", "urgent", 9)
	waitFor(t, 30*time.Second, "1,001 deferred messages", func() bool {
		n := 0
		for _, m := range a.queued() {
			if m.Recipients[0].Status == spool.StatusDeferred {
				n++
			}
		}
		return n == 1001
	})
	l.Heal()
	waitFor(t, 60*time.Second, "1,001 messages at b", func() bool { return len(b.mailbox("alice")) == 1001 })
	got := b.mailbox("alice")
	pos := slices.Index(got, "urgent")
	t.Logf("the urgent message was delivered %d. of 1,001", pos+1)
	if pos < 0 || pos >= 20 {
		t.Errorf("the urgent message was delivered %d. (want among the first 20)", pos+1)
	}
}
