package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relay-mta/relay/client"
	"github.com/relay-mta/relay/spool"
)

// TestDrain (issue 23): node a holds N messages for a next hop that is
// down; `relay queue drain --to b` makes it refuse new mail and hand its
// queue to relay b. a is SIGKILLed a third of the way through, restarted
// as `relay serve --drain --to b`, finishes the transfer and exits by
// itself. Every message is in b's mailbox exactly once (hand-off tokens:
// what a sent just before it died is not stored twice), a's queue is
// empty and its history says "transferred".
//
//	RELAY_DRAIN_MESSAGES=10000 go test -run '^TestDrain$' -v ./integration
func TestDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("drain test skipped in -short mode")
	}
	n := 500
	if s := os.Getenv("RELAY_DRAIN_MESSAGES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 3 {
			t.Fatalf("RELAY_DRAIN_MESSAGES=%q: want a number of messages, at least 3", s)
		}
		n = v
	}
	bin := relayBinary(t)
	down := freeAddr(t, "127.0.30.41") // nothing listens: the next hop is down
	a := drainNode(t, "a", "127.0.32.41", fmt.Sprintf("local_domains = [\"a.test\"]\n[[route]]\ndomain = \"sink.test\"\nto = %q\ntls = \"none\"\n", down))
	b := drainNode(t, "b", "127.0.32.42", "local_domains = [\"sink.test\"]\n")
	a.p = startProc(t, a.cfg, a.addr)
	b.p = startProc(t, b.cfg, b.addr)

	// N messages queued at a.
	ids := make([]string, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var sendErrs []string
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id, err := sendOne(a.addr, "client@a.test", "sink@sink.test",
					fmt.Sprintf("Subject: drain-%d\r\nMessage-ID: <drain-%d@a.test>\r\n\r\nbody of drain-%d\r\n", i, i, i))
				mu.Lock()
				if err != nil {
					sendErrs = append(sendErrs, err.Error())
				}
				ids[i] = id
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(sendErrs) > 0 {
		t.Fatalf("%d messages refused at a: %s", len(sendErrs), sendErrs[0])
	}
	admin := client.NewAdmin(filepath.Join(a.dir, "admin.sock"))
	queued := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := admin.Stats(ctx)
		if err != nil {
			return -1
		}
		return st.Messages
	}
	if q := queued(); q != n {
		t.Fatalf("a has %d messages queued, want %d", q, n)
	}
	// One message by hand first, as an operator would.
	out, err := exec.Command(bin, "queue", "--config", a.cfg, "transfer", "--to", b.addr, ids[0]).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "transfer "+ids[0]+": transferred to "+b.addr+": 1 recipient: 250 ") {
		t.Fatalf("relay queue transfer: %v\n%s", err, out)
	}
	t.Logf("relay queue transfer --to %s %s: %s", b.addr, ids[0], bytes.TrimSpace(out))
	if q := queued(); q != n-1 {
		t.Fatalf("a has %d messages queued after one transfer, want %d", q, n-1)
	}

	// The drain, through the admin socket.
	start := time.Now()
	out, err = exec.Command(bin, "queue", "--config", a.cfg, "drain", "--to", b.addr).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "draining") {
		t.Fatalf("relay queue drain: %v\n%s", err, out)
	}
	t.Logf("relay queue drain --to %s: %s", b.addr, bytes.TrimSpace(out))
	// New mail is refused: the listener is closed (or, for a connection
	// that got in first, 421 4.3.2).
	waitFor(t, 10*time.Second, "a to stop accepting mail", func() bool {
		c, err := net.DialTimeout("tcp", a.addr, time.Second)
		if err != nil {
			return true
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.HasPrefix(line, "421 4.3.2")
	})
	// SIGKILL at a third of the way.
	// Polled slowly: a count reads the whole queue.
	left := queued()
	for deadline := time.Now().Add(5 * time.Minute); left < 0 || left > n-n/3; left = queued() {
		if time.Now().After(deadline) {
			t.Fatalf("after 5 minutes %d of %d messages are still at a", left, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.p.kill()
	firstPart := time.Since(start)
	t.Logf("a SIGKILLed after %v with %d of %d messages left (%.0f msg/s so far)", firstPart.Round(time.Millisecond), left, n, float64(n-left)/firstPart.Seconds())

	// Restarted draining: it transfers the rest and exits by itself.
	restart := time.Now()
	cmd := exec.Command(bin, "serve", "--config", a.cfg, "--drain", "--to", b.addr)
	logf, err := os.OpenFile(a.cfg+".log", os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("relay serve --drain: %v", err)
		}
	case <-time.After(10 * time.Minute):
		cmd.Process.Kill()
		t.Fatal("relay serve --drain did not exit within 10 minutes")
	}
	second := time.Since(restart)
	total := firstPart + second
	t.Logf("restarted a drained the remaining %d in %v and exited; %d messages in %v of transfer: %.0f msg/s",
		left, second.Round(time.Millisecond), n, total.Round(time.Millisecond), float64(n)/total.Seconds())
	if err := b.p.stop(); err != nil {
		t.Errorf("relay b: %v", err)
	}
	logText, _ := os.ReadFile(b.cfg + ".log")
	again := bytes.Count(logText, []byte("accepted again, not stored twice"))

	// The verdict: b's mailbox, a's spool.
	sb, err := spool.Open(spool.Options{Dir: filepath.Join(b.dir, "spool"), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	copies := map[string]int{}
	for _, s := range mailboxSubjects(t, sb, "sink") {
		copies[s]++
	}
	sb.Close()
	var duplicates, lost int
	for i := 0; i < n; i++ {
		switch c := copies[fmt.Sprintf("drain-%d", i)]; {
		case c == 0:
			lost++
		case c > 1:
			duplicates += c - 1
		}
	}
	sa, err := spool.Open(spool.Options{Dir: filepath.Join(a.dir, "spool"), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	still := 0
	sa.List(func(*spool.Message) error { still++; return nil })
	transferred := 0
	for _, id := range []string{ids[0], ids[n/2], ids[n-1]} {
		if h, err := sa.History(id); err == nil {
			for _, e := range h.Events {
				if e.Kind == spool.EventTransferred && strings.Contains(e.Text, b.addr) {
					transferred++
				}
			}
		}
	}
	t.Logf("drain: %d messages, delivered at b %d, duplicates %d, lost %d; re-sends b answered without a second copy: %d; left at a: %d",
		n, len(copies), duplicates, lost, again, still)
	if duplicates > 0 || lost > 0 || still > 0 {
		t.Errorf("duplicates %d, lost %d, still queued at a %d: want 0, 0, 0", duplicates, lost, still)
	}
	if transferred != 3 {
		t.Errorf("%d of 3 sampled messages have a \"transferred\" event in a's history", transferred)
	}
}

// drainNode writes the configuration of a relay for TestDrain.
func drainNode(t *testing.T, name, ip, extra string) *chaosRelay {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	r := &chaosRelay{name: name, dir: dir, addr: freeAddr(t, ip)}
	top, routes, _ := strings.Cut(extra, "[[route]]")
	cfg := fmt.Sprintf(`%shostname = "%s.test"
data_dir = %q
relay_networks = ["127.0.0.0/8"]
users_file = "users"
[smtp]
listen = [%q]
[pop3]
listen = []
[admin]
socket = "admin.sock"
[queue]
retry_min = "30s"
retry_max = "1m"
delay_warning = "0"
`, top, name, dir, r.addr)
	if routes != "" {
		cfg += "[[route]]" + routes
	}
	r.writeConfig(t, cfg, []string{"sink"})
	return r
}

// mailboxSubjects returns the subjects in user's mailbox of sp.
func mailboxSubjects(t *testing.T, sp *spool.Spool, user string) []string {
	t.Helper()
	var out []string
	for _, raw := range spoolMailbox(t, sp, user) {
		if m := subjectRE.FindStringSubmatch(raw); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

// TestDrainStopped: an operator stops (SIGTERM) a relay whose drain cannot
// finish, because the relay it transfers to is down. The relay exits as it
// would without the drain, every message stays queued (none held, none
// lost), and started again without --drain it takes mail as before.
func TestDrainStopped(t *testing.T) {
	if testing.Short() {
		t.Skip("drain test skipped in -short mode")
	}
	const n = 20
	bin := relayBinary(t)
	down := freeAddr(t, "127.0.30.43") // the next hop: nothing listens
	to := freeAddr(t, "127.0.30.44")   // the relay to drain to: down too
	a := drainNode(t, "a", "127.0.32.43", fmt.Sprintf("local_domains = [\"a.test\"]\n[[route]]\ndomain = \"sink.test\"\nto = %q\ntls = \"none\"\n", down))
	a.p = startProc(t, a.cfg, a.addr)
	for i := 0; i < n; i++ {
		if _, err := sendOne(a.addr, "client@a.test", "sink@sink.test",
			fmt.Sprintf("Subject: stopped-%d\r\n\r\nbody %d\r\n", i, i)); err != nil {
			t.Fatalf("message %d refused: %v", i, err)
		}
	}
	out, err := exec.Command(bin, "queue", "--config", a.cfg, "drain", "--to", to).CombinedOutput()
	if err != nil {
		t.Fatalf("relay queue drain: %v\n%s", err, out)
	}
	waitFor(t, 10*time.Second, "a to stop accepting mail", func() bool {
		c, err := net.DialTimeout("tcp", a.addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	time.Sleep(3 * time.Second) // at least one transfer round that failed
	stopped := time.Now()
	if err := a.p.stop(); err != nil {
		t.Fatalf("SIGTERM during a drain: %v", err)
	}
	t.Logf("a stopped %v after SIGTERM, in the middle of a drain to a relay that is down", time.Since(stopped).Round(time.Millisecond))

	a.p = startProc(t, a.cfg, a.addr)
	if _, err := sendOne(a.addr, "client@a.test", "sink@sink.test", "Subject: after\r\n\r\nafter the drain\r\n"); err != nil {
		t.Fatalf("restarted without --drain, a refuses mail: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin := client.NewAdmin(filepath.Join(a.dir, "admin.sock"))
	st, err := admin.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.p.stop(); err != nil {
		t.Fatal(err)
	}
	sa, err := spool.Open(spool.Options{Dir: filepath.Join(a.dir, "spool"), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	held := 0
	sa.List(func(m *spool.Message) error {
		if m.Held {
			held++
		}
		return nil
	})
	t.Logf("after the restart: %d messages queued, %d held", st.Messages, held)
	if st.Messages != n+1 || held != 0 {
		t.Errorf("a has %d messages queued (%d held), want %d, none held", st.Messages, held, n+1)
	}
}
