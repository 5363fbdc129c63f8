package integration

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/smtpd/smtptest"
	"github.com/relay-mta/relay/spool"
)

// sendWithPriority submits one message with MAIL FROM ... MT-PRIORITY=p.
func sendWithPriority(t *testing.T, addr, to, subject string, p int) {
	t.Helper()
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO client.test", "250 ")
	c.Send(fmt.Sprintf("<sender@a.test> MT-PRIORITY=%d", p), []string{"<" + to + ">"}, "Subject: "+subject+"\r\n\r\nurgent\r\n")
	c.Cmd("QUIT", "221 ")
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
