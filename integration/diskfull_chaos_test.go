package integration

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// msgSink is the next hop of TestDiskFullChaos: it counts the messages
// it receives by Message-ID, and can be brought up and down.
type msgSink struct {
	addr string
	mu   sync.Mutex
	got  map[string]int
	srv  *smtp.Server

	refusing atomic.Bool
}

var messageIDRE = regexp.MustCompile(`(?mi)^Message-ID: <([^>]+)>`)

func (k *msgSink) NewSession(*smtp.Conn) (smtp.Session, error) { return sinkSession{k}, nil }

type sinkSession struct{ k *msgSink }

func (sinkSession) Reset()        {}
func (sinkSession) Logout() error { return nil }
func (s sinkSession) Mail(string, *smtp.MailOptions) error {
	if s.k.refusing.Load() {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "down for the test"}
	}
	return nil
}
func (sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if m := messageIDRE.FindSubmatch(b); m != nil {
		s.k.mu.Lock()
		s.k.got[string(m[1])]++
		s.k.mu.Unlock()
	}
	return nil
}

// up makes the sink take mail; it listens from the first call on.
func (k *msgSink) up(t *testing.T) {
	t.Helper()
	k.refusing.Store(false)
	if k.srv != nil {
		return
	}
	l, err := net.Listen("tcp", k.addr)
	if err != nil {
		t.Fatal(err)
	}
	k.srv = smtp.NewServer(k)
	k.srv.Domain = "sink.test"
	k.srv.MaxMessageBytes = 4 << 20
	go k.srv.Serve(l)
	t.Cleanup(func() { k.srv.Close() })
}

// down makes the sink answer 451 to MAIL: mail is deferred, and no
// transaction is cut short (a message taken whose 250 was lost would
// come again, a duplicate that has nothing to do with the disk).
func (k *msgSink) down() { k.refusing.Store(true) }

// fillDisk takes all free space of dir's filesystem, as dd would: by
// writing 1 MiB blocks until ENOSPC, or by fallocating until ENOSPC.
func fillDisk(t *testing.T, path string, write bool) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	if write {
		buf := make([]byte, 1<<20)
		for {
			if _, err := f.Write(buf); err != nil {
				break
			}
		}
		f.Write(buf[:4096]) // the last partial block
		return
	}
	off, _ := f.Seek(0, io.SeekEnd)
	for n := int64(64 << 20); n >= 4096; {
		if err := syscall.Fallocate(int(f.Fd()), 0, off, n); err != nil {
			n /= 2
			continue
		}
		off += n
	}
}

// probe asks the relay for a MAIL transaction: 250 and 452 mean it is
// up; anything else (refused connection, no reply) does not.
func probe(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	tp := textproto.NewConn(c)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return err
	}
	for _, cmd := range []string{"EHLO probe.test", "MAIL FROM:<p@probe.test>"} {
		if err := tp.PrintfLine("%s", cmd); err != nil {
			return err
		}
		code, msg, err := tp.ReadResponse(0)
		if err != nil {
			return err
		}
		if code != 250 && !(code == 452 && strings.HasPrefix(cmd, "MAIL")) {
			return fmt.Errorf("%s: %d %s", cmd, code, msg)
		}
	}
	tp.PrintfLine("QUIT")
	return nil
}

// TestDiskFullChaos fills data_dir's filesystem at random moments (in
// acceptance bursts, during delivery bookkeeping, at start, around a
// SIGKILL) and checks that the daemon never dies, that every message it
// acknowledged is delivered once space has returned, and that it accepts
// again by itself.
func TestDiskFullChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess disk-full test skipped in -short mode")
	}
	disk := smallDisk(t, "192m")
	dataDir := filepath.Join(disk, "data")
	relayAddr := freeAddr(t, "127.0.21.1")
	sink := &msgSink{addr: freeAddr(t, "127.0.21.2"), got: map[string]int{}}
	cfgDir := t.TempDir() // off the small disk: the log must survive it
	cfgPath := filepath.Join(cfgDir, "relay.toml")
	cfg := fmt.Sprintf(`hostname = "relay.test"
data_dir = %q
local_domains = ["relay.test"]
relay_networks = ["127.0.0.0/8"]
[smtp]
listen = [%q]
max_message_size = "2MiB"
[pop3]
listen = []
[admin]
socket = ""
[queue]
retry_min = "200ms"
retry_max = "500ms"
min_free_space = "16MiB"
[[route]]
domain = "*"
to = %q
tls = "none"
`, dataDir, relayAddr, sink.addr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := cfgPath + ".log"
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			if loc := crashRE.FindIndex(out); loc != nil {
				out = out[:min(loc[0]+3000, len(out))] // the crash and its goroutine
			}
			t.Logf("the relay's log ends:\n%s", tail(out, 30))
		}
	})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 17))
	t.Logf("seed time %v", time.Now().UnixNano())

	var (
		mu     sync.Mutex
		acked  []string // Message-IDs that got 250
		seq    atomic.Int64
		p      = startProc(t, cfgPath, relayAddr)
		deaths int
		downs  int
	)
	// The watchdog: the daemon must be alive and answer SMTP throughout,
	// except while the test itself restarts it.
	var watching atomic.Bool
	watching.Store(true)
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	procMu := sync.Mutex{}
	go func() {
		defer close(watchDone)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if !watching.Load() {
				continue
			}
			procMu.Lock()
			cur := p
			procMu.Unlock()
			select {
			case <-cur.done:
				if watching.Load() {
					mu.Lock()
					deaths++
					mu.Unlock()
					t.Errorf("relay died: %v", cur.cmd.ProcessState)
					return
				}
			default:
			}
			if err := probe(relayAddr); err != nil && watching.Load() {
				mu.Lock()
				downs++
				mu.Unlock()
				t.Errorf("relay does not answer: %v", err)
			}
		}
	}()

	sendOne := func() {
		n := seq.Add(1)
		mid := fmt.Sprintf("chaos-%d@src.test", n)
		size := 100 + rng.IntN(1<<20)
		if n%3 == 0 {
			size = 900<<10 + rng.IntN(100<<10)
		}
		body := fmt.Sprintf("Subject: diskfull %d\r\nMessage-ID: <%s>\r\n\r\n%s", n, mid, strings.Repeat(strings.Repeat("x", 76)+"\r\n", size/78+1))
		c, err := smtp.Dial(relayAddr)
		if err != nil {
			return
		}
		defer c.Close()
		if c.Hello("src.test") != nil || c.Mail("a@src.test", nil) != nil || c.Rcpt(fmt.Sprintf("u%d@sink.test", n), nil) != nil {
			return
		}
		w, err := c.Data()
		if err != nil {
			return
		}
		w.Write([]byte(body))
		if err := w.Close(); err != nil {
			var se *smtp.SMTPError
			if errors.As(err, &se) && se.Code != 452 {
				t.Errorf("message %d: %v (want 250 or 452)", n, err)
			}
			return
		}
		mu.Lock()
		acked = append(acked, mid)
		mu.Unlock()
		c.Quit()
	}
	burst := func(senders, each int) {
		var wg sync.WaitGroup
		for range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					sendOne()
				}
			}()
		}
		wg.Wait()
	}
	filler := filepath.Join(disk, "filler")
	unfill := func() {
		t.Helper()
		os.Remove(filler)
		// The relay accepts again by itself within a few seconds.
		deadline := time.Now().Add(10 * time.Second)
		for {
			before := len(snapshot(&mu, &acked))
			sendOne()
			if len(snapshot(&mu, &acked)) > before {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the relay does not accept again 10s after space returned")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// Rounds 1-2: the disk fills during an acceptance burst (the next hop
	// is down, so everything stays queued), by writing and by fallocate.
	for round, write := range []bool{true, false} {
		done := make(chan struct{})
		go func() {
			time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
			fillDisk(t, filler, write)
			close(done)
		}()
		burst(40, 3)
		<-done
		time.Sleep(300 * time.Millisecond) // full for a while; the watchdog probes
		t.Logf("round %d (fill by %s): %d acknowledged so far, free %d", round+1, map[bool]string{true: "write", false: "fallocate"}[write], len(snapshot(&mu, &acked)), freeBytes(t, disk))
		unfill()
	}

	// Round 3: during delivery bookkeeping: the next hop comes up, the
	// disk fills while results, history and DSNs are being written.
	burst(20, 2)
	sink.up(t)
	time.Sleep(time.Duration(50+rng.IntN(300)) * time.Millisecond)
	fillDisk(t, filler, rng.IntN(2) == 0)
	burst(10, 2)
	time.Sleep(time.Second)
	t.Logf("round 3 (fill during deliveries): %d acknowledged so far", len(snapshot(&mu, &acked)))
	sink.down()
	unfill()

	// Round 4: killed, the disk filled while it is down (the ballast
	// stays), restarted on the full disk: it must start.
	burst(10, 2)
	ballast := filepath.Join(dataDir, "spool", "ballast")
	waitFor(t, 10*time.Second, "the ballast to be back", func() bool { _, err := os.Stat(ballast); return err == nil })
	watching.Store(false)
	p.kill()
	fillDisk(t, filler, false)
	procMu.Lock()
	p = startProc(t, cfgPath, relayAddr)
	procMu.Unlock()
	watching.Store(true)
	time.Sleep(500 * time.Millisecond)
	t.Logf("round 4 (restart on a full disk): started, free %d", freeBytes(t, disk))
	unfill()

	// Round 5: the disk fills (ballast spent) while a burst runs, the
	// relay is killed and restarted while it is full: it starts, or exits
	// with the one line saying how much space it needs, never a crash.
	go func() {
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		fillDisk(t, filler, true)
	}()
	burst(20, 2)
	time.Sleep(200 * time.Millisecond)
	fillDisk(t, filler, false)
	watching.Store(false)
	p.kill()
	restarted := tryStart(t, cfgPath, relayAddr)
	if restarted == nil {
		out, _ := os.ReadFile(logPath)
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		last := lines[len(lines)-1]
		if !regexp.MustCompile(`^spool: open \S+: [0-9.]+ MiB free, need at least \d+ MiB to open the spool$`).MatchString(last) {
			t.Fatalf("relay exited at start on a full disk without the one line; its last line: %q", last)
		}
		t.Logf("round 5: restart on a disk without ballast: %s", last)
		os.Remove(filler)
		restarted = startProc(t, cfgPath, relayAddr)
	} else {
		t.Logf("round 5: restarted on a full disk without ballast, free %d", freeBytes(t, disk))
	}
	procMu.Lock()
	p = restarted
	procMu.Unlock()
	watching.Store(true)
	unfill()

	// Space is back: everything acknowledged is delivered, exactly once.
	sink.up(t)
	ids := snapshot(&mu, &acked)
	deadline := time.Now().Add(30 * time.Second)
	for {
		sink.mu.Lock()
		missing := 0
		for _, id := range ids {
			if sink.got[id] == 0 {
				missing++
			}
		}
		sink.mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages not delivered 30s after space returned", missing, len(ids))
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stopWatch)
	<-watchDone
	sink.mu.Lock()
	dups := 0
	for _, id := range ids {
		if sink.got[id] > 1 {
			dups++
		}
	}
	sink.mu.Unlock()
	if out, _ := os.ReadFile(logPath); crashRE.Match(out) {
		t.Errorf("the relay's log shows a crash:\n%s", tail(out, 40))
	}
	t.Logf("acknowledged %d, delivered %d, lost 0, duplicates %d, deaths %d, unanswered probes %d", len(ids), len(ids), dups, deaths, downs)
	if dups > 0 {
		t.Errorf("%d messages delivered more than once", dups)
	}
	if len(ids) < 50 {
		t.Errorf("only %d messages acknowledged: the load did not happen", len(ids))
	}
	if err := p.stop(); err != nil {
		t.Error(err)
	}
}

// crashRE finds a Go runtime crash in the relay's log.
var crashRE = regexp.MustCompile(`(?m)^(SIGBUS|fatal error|panic:|unexpected fault address)`)

func snapshot(mu *sync.Mutex, s *[]string) []string {
	mu.Lock()
	defer mu.Unlock()
	return append([]string(nil), *s...)
}

func tail(b []byte, n int) string {
	lines := strings.Split(string(b), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// tryStart runs relay serve and returns it once it listens, or nil if it
// exited first.
func tryStart(t *testing.T, cfgPath, addr string) *proc {
	t.Helper()
	logf, err := os.OpenFile(cfgPath+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, addr: addr, log: logf, done: make(chan struct{})}
	p.cmd = exec.Command(relayBinary(t), "serve", "--config", cfgPath)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill(); logf.Close() })
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.done:
			return nil
		default:
		}
	}
	t.Fatalf("relay neither listens nor exits")
	return nil
}
