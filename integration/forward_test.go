package integration

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relay-mta/relay/spool"
)

// TestChainCutAndHeal: A→B→C with the B→C link cut. Messages wait at B,
// deferred; after the heal each arrives in C's mailbox exactly once.
func TestChainCutAndHeal(t *testing.T) {
	a, b, c := newNode(t, "a", "127.0.0.21"), newNode(t, "b", "127.0.0.22"), newNode(t, "c", "127.0.0.23")
	c.start()
	bc := link(t, "127.0.0.22", c)
	b.route("c.test", bc.Addr())
	b.start()
	a.route("c.test", b.addr)
	a.start()

	bc.Cut()
	const n = 20
	for i := 0; i < n; i++ {
		send(t, a.addr, "alice@c.test", fmt.Sprintf("cut %d", i))
	}
	waitFor(t, 20*time.Second, "20 deferred messages at B", func() bool {
		q := b.queued()
		if len(q) != n {
			return false
		}
		for _, m := range q {
			if r := m.Recipients[0]; r.Status != spool.StatusDeferred || r.Attempts < 1 || r.LastReply == "" {
				return false
			}
		}
		return true
	})
	if got := len(c.mailbox("alice")); got != 0 {
		t.Fatalf("%d messages crossed a cut link", got)
	}
	t.Logf("B holds %d deferred messages; last reply %q", n, b.queued()[0].Recipients[0].LastReply)

	bc.Heal()
	waitFor(t, 30*time.Second, "20 messages in C's mailbox", func() bool { return len(c.mailbox("alice")) >= n })
	time.Sleep(500 * time.Millisecond) // any duplicate would arrive now
	copies := countCopies(c.mailbox("alice"))
	sp := c.r.Spool()
	box, _ := sp.Mailbox("alice")
	first, _ := sp.MailboxMessage("alice", box[0].Seq)
	if !strings.HasPrefix(string(first), "Return-Path: <sender@a.test>\r\nDelivered-To: alice@c.test\r\nReceived: from b.test") ||
		strings.Count(string(first), "\r\nReceived: ") != 3 || strings.Contains(string(first), "X-Relay-Handoff") {
		t.Errorf("delivered message has the wrong trace headers:\n%s", first)
	}
	for i := 0; i < n; i++ {
		if k := copies[fmt.Sprintf("cut %d", i)]; k != 1 {
			t.Errorf("message %d arrived %d times", i, k)
		}
	}
	for _, nd := range []*node{a, b, c} {
		if q := nd.queued(); len(q) != 0 {
			t.Errorf("%s still queues %d messages", nd.name, len(q))
		}
	}
}

// TestDropMidData: the link dies in the middle of DATA; the message is
// retried and arrives.
func TestDropMidData(t *testing.T) {
	a, b := newNode(t, "a", "127.0.0.31"), newNode(t, "b", "127.0.0.32")
	b.start()
	ab := link(t, "127.0.0.31", b)
	ab.DropMidData(1)
	a.route("b.test", ab.Addr())
	a.start()
	send(t, a.addr, "alice@b.test", "dropped once")
	waitFor(t, 20*time.Second, "the message in B's mailbox", func() bool { return len(b.mailbox("alice")) >= 1 })
	time.Sleep(500 * time.Millisecond)
	got := len(b.mailbox("alice"))
	_, dropped := ab.Stats()
	t.Logf("connections dropped mid-DATA: %d; copies delivered: %d (duplicates: %d)", dropped, got, got-1)
	if dropped != 1 {
		t.Fatalf("link dropped %d connections mid-DATA, want 1", dropped)
	}
	if got > 2 {
		t.Fatalf("%d copies: more than one duplicate", got)
	}
	if len(a.queued()) != 0 {
		t.Fatal("A still queues the message")
	}
}

// TestRandomCuts: 1,000 messages through a 3-relay chain while both links
// are cut and healed at random for half the run. All arrive, exactly once.
func TestRandomCuts(t *testing.T) {
	if testing.Short() {
		t.Skip("long partition test skipped in -short mode")
	}
	a, b, c := newNode(t, "a", "127.0.0.41"), newNode(t, "b", "127.0.0.42"), newNode(t, "c", "127.0.0.43")
	c.start()
	bc := link(t, "127.0.0.42", c)
	b.route("c.test", bc.Addr())
	b.start()
	ab := link(t, "127.0.0.41", b)
	a.route("c.test", ab.Addr())
	a.start()

	const n, senders = 1000, 8
	stopNemesis := make(chan struct{})
	nemesisDone := make(chan int)
	go func() {
		cuts := 0
		links := []*Link{ab, bc}
		for {
			select {
			case <-stopNemesis:
				ab.Heal()
				bc.Heal()
				nemesisDone <- cuts
				return
			case <-time.After(time.Duration(20+rand.IntN(150)) * time.Millisecond):
			}
			l := links[rand.IntN(2)]
			if rand.IntN(2) == 0 {
				l.Cut()
				cuts++
			} else {
				l.Heal()
			}
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := s; i < n; i += senders {
				send(t, a.addr, "alice@c.test", fmt.Sprintf("chaos %d", i))
			}
		}()
	}
	wg.Wait()
	sendTime := time.Since(start)
	// The nemesis runs for half the run: as long again as sending took,
	// with delivery going on all the while.
	time.Sleep(max(sendTime, 3*time.Second))
	close(stopNemesis)
	cuts := <-nemesisDone
	waitFor(t, 90*time.Second, "1000 messages in C's mailbox", func() bool { return len(c.mailbox("alice")) >= n })
	time.Sleep(time.Second)
	copies := countCopies(c.mailbox("alice"))
	missing, dups := 0, 0
	for i := 0; i < n; i++ {
		switch k := copies[fmt.Sprintf("chaos %d", i)]; {
		case k == 0:
			missing++
		case k > 1:
			dups += k - 1
		}
	}
	t.Logf("%d messages, %d link cuts, %v total; missing %d, duplicates %d", n, cuts, time.Since(start).Round(time.Millisecond), missing, dups)
	if missing != 0 || dups != 0 {
		t.Fatalf("missing %d, duplicates %d", missing, dups)
	}
}
