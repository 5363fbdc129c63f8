package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relay-mta/relay/queue"
)

// shapedPair is a sender a routing b.test through a Link to b.
func shapedPair(t *testing.T, aIP, bIP string, shape func(n *node)) (a, b *node, l *Link) {
	t.Helper()
	b = newNode(t, "b", bIP).start()
	l = link(t, bIP, b)
	a = newNode(t, "a", aIP)
	a.route("b.test", l.Addr())
	if shape != nil {
		shape(a)
	}
	return a.start(), b, l
}

// sendMany submits n messages to alice@b.test at addr from a few
// concurrent clients, with subjects prefix000, prefix001, ...
func sendMany(t *testing.T, addr, prefix string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	next := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				subject := fmt.Sprintf("%s%03d", prefix, i)
				if _, err := sendOne(addr, "sender@a.test", "alice@b.test", "Subject: "+subject+"\r\n\r\nbody\r\n"); err != nil {
					t.Errorf("send %s: %v", subject, err)
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

func hopState(a *node, key string) (queue.HopState, bool) {
	for _, h := range a.r.Hops() {
		if h.Key == key {
			return h, true
		}
	}
	return queue.HopState{}, false
}

// TestMaxMessageRate: max_message_rate = "20/s" to a hop spaces 200
// messages over about ten seconds, whatever the concurrency.
func TestMaxMessageRate(t *testing.T) {
	a, b, _ := shapedPair(t, "127.0.27.20", "127.0.27.21", func(a *node) {
		a.cfg.Routes[0].MaxMessageRate.N, a.cfg.Routes[0].MaxMessageRate.Per = 20, time.Second
	})
	start := time.Now()
	sendMany(t, a.addr, "m", 200)
	waitFor(t, 30*time.Second, "200 messages at b", func() bool { return len(b.mailbox("alice")) == 200 })
	took := time.Since(start)
	t.Logf("200 messages at 20/s took %v", took.Round(time.Millisecond))
	if took < 9*time.Second || took > 12*time.Second {
		t.Errorf("200 messages at 20/s took %v, want 9-12 s", took)
	}
}

// TestThrottleOn421: a hop that starts answering 421 4.7.0 to every
// second connection gets fewer connections, and all the mail still
// arrives.
func TestThrottleOn421(t *testing.T) {
	a, b, l := shapedPair(t, "127.0.27.22", "127.0.27.23", func(a *node) {
		a.cfg.Queue.PerHopConcurrency = 8
		// Sessions carry few messages each, so connections keep being
		// opened and the hop keeps being asked.
		a.cfg.Routes[0].MaxMessagesPerConnection = 10
		a.cfg.Admin.Socket = filepath.Join(a.cfg.DataDir, "admin.sock")
	})
	// A slow hop, so that every allowed session is busy.
	l.SetDelay(20 * time.Millisecond)
	sendMany(t, a.addr, "first", 100)
	waitFor(t, 30*time.Second, "100 messages at b", func() bool { return len(b.mailbox("alice")) == 100 })
	before, _ := l.Peak()

	l.BusyEvery(2)
	done := make(chan struct{})
	go func() { sendMany(t, a.addr, "second", 100); close(done) }()
	waitFor(t, 20*time.Second, "a 421 from the hop", func() bool { return l.Busy() > 0 })
	// Sessions over the new limit end after their current message.
	time.Sleep(500 * time.Millisecond)
	l.ResetPeak()
	waitFor(t, 60*time.Second, "200 messages at b", func() bool { return len(b.mailbox("alice")) == 200 })
	<-done
	after, _ := l.Peak()
	key := "smtp:" + l.Addr() + ";tls=none"
	h, ok := hopState(a, key)
	if !ok {
		t.Fatalf("no shaping state for %s in %+v", key, a.r.Hops())
	}
	accepted, _ := l.Stats()
	t.Logf("at most %d connections at once before the 421s, %d after; %d connections, %d answered 421; hop %+v", before, after, accepted, l.Busy(), h)
	if h.Level < 1 || h.Throttles < 1 || h.Limit > 4 {
		t.Errorf("hop not throttled: %+v", h)
	}
	if before <= 4 {
		t.Errorf("only %d connections at once before the 421s: the test needs a busy hop", before)
	}
	if after > 4 || after >= before {
		t.Errorf("%d connections at once after the hop said 421 (%d before), want at most 4 (half of per_hop_concurrency 8)", after, before)
	}
	if got := countCopies(b.mailbox("alice")); len(got) != 200 {
		t.Errorf("%d distinct messages at b, want 200", len(got))
	}
	// Operators see it in relay queue stats.
	out := mustRun(t, nil, "queue", "stats", "--admin", a.cfg.Admin.Socket)
	t.Logf("relay queue stats:\n%s", out)
	if !strings.Contains(out, "(throttled, level ") || !strings.Contains(out, key) {
		t.Errorf("relay queue stats does not show the throttled hop:\n%s", out)
	}
	// And the metrics.
	hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", a.cfg.Admin.Socket)
	}}}
	resp, err := hc.Get("http://admin/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf("relay_hop_throttle_level{hop=%q} %d", key, h.Level),
		fmt.Sprintf("relay_hop_session_limit{hop=%q} %d", key, h.Limit),
		fmt.Sprintf("relay_hop_throttled_total{hop=%q} %d", key, h.Throttles),
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestConnectionCache: 200 messages trickling in one every 50 ms reuse
// the sessions to the hop instead of dialling each time.
func TestConnectionCache(t *testing.T) {
	a, b, l := shapedPair(t, "127.0.27.24", "127.0.27.25", nil)
	for i := range 200 {
		send(t, a.addr, "alice@b.test", fmt.Sprintf("trickle %03d", i))
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, 20*time.Second, "200 messages at b", func() bool { return len(b.mailbox("alice")) == 200 })
	accepted, _ := l.Stats()
	t.Logf("200 messages, one per 50 ms: %d TCP connections to the hop", accepted)
	if accepted > 10 {
		t.Errorf("%d connections for 200 messages, want at most 10", accepted)
	}
}
