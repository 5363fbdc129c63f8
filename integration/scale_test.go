package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relay-mta/relay/spool"
)

// TestScaleDeferred checks the relay with 200,000 deferred recipients in
// its spool: RSS, startup time, and the rate of new mail (smtp-source into
// the relay, forwarded to smtp-sink) against the same on an empty spool.
// It takes a few minutes, so it runs only with RELAY_SCALE=1 (N overrides
// the count).
func TestScaleDeferred(t *testing.T) {
	if os.Getenv("RELAY_SCALE") == "" {
		t.Skip("set RELAY_SCALE=1 to run the 200,000-deferred-recipient scale test")
	}
	src, sink := "/usr/sbin/smtp-source", "/usr/sbin/smtp-sink"
	for _, p := range []string{src, sink} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s missing (Debian package postfix)", p)
		}
	}
	deferredN := 200000
	if v := os.Getenv("N"); v != "" {
		deferredN, _ = strconv.Atoi(v)
	}
	full := t.TempDir()
	start := time.Now()
	fillDeferred(t, filepath.Join(full, "spool"), deferredN)
	t.Logf("filled spool with %d deferred recipients in %v; %s on disk", deferredN, time.Since(start).Round(time.Millisecond), du(full))

	empty := t.TempDir()
	const n = 10000
	for _, run := range []struct{ name, dir string }{{"empty", empty}, {"big spool", full}, {"empty again", empty}} {
		rate, startup, rss := measureRelay(t, run.dir, n)
		t.Logf("%-14s startup %6v  new mail end to end %6.0f msg/s  peak RSS %d MiB", run.name, startup.Round(time.Millisecond), rate, rss>>20)
		switch run.name {
		case "empty":
			t.Setenv("SCALE_EMPTY_RATE", fmt.Sprint(rate))
		case "big spool":
			if startup > 5*time.Second {
				t.Errorf("startup took %v with the big spool, want < 5s", startup)
			}
			if rss > 250<<20 {
				t.Errorf("peak RSS %d MiB, want <= 250", rss>>20)
			}
			emptyRate, _ := strconv.ParseFloat(os.Getenv("SCALE_EMPTY_RATE"), 64)
			if rate < 0.8*emptyRate {
				t.Errorf("new mail at %.0f msg/s, below 80%% of the empty spool's %.0f", rate, emptyRate)
			}
		}
	}
}

// fillDeferred enqueues n one-recipient messages and defers each by a day,
// as a relay would after a failed attempt, routed to a dead next hop.
func fillDeferred(t *testing.T, dir string, n int) {
	sp, err := spool.Open(spool.Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	body := []byte("Subject: deferred\r\n\r\n" + strings.Repeat("x", 900) + "\r\n")
	next := time.Now().Add(24 * time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 32 {
				id, err := sp.Enqueue(context.Background(), spool.Envelope{From: "<a@src.test>"},
					[]spool.Recipient{{To: fmt.Sprintf("<u%d@dead.test>", i)}}, body)
				if err == nil {
					_, err = sp.Record(context.Background(), id, []spool.Result{{Rcpt: 0, Status: spool.StatusDeferred,
						Reply: "451 4.4.1 connection refused", NextAttempt: next}}, nil)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func du(dir string) string {
	out, _ := exec.Command("du", "-sh", dir).Output()
	return strings.Fields(string(out) + " ?")[0]
}

// measureRelay runs the relay binary on dataDir and pushes n messages
// through it to smtp-sink; it returns the end-to-end rate, the time from
// exec to listening, and the peak RSS.
func measureRelay(t *testing.T, dataDir string, n int) (float64, time.Duration, int64) {
	t.Helper()
	relayAddr, sinkAddr := freeAddr(t, "127.0.0.51"), freeAddr(t, "127.0.0.52")
	cfg := fmt.Sprintf(`hostname = "relay.test"
data_dir = %q
local_domains = ["relay.test"]
[smtp]
listen = [%q]
[pop3]
listen = []
[admin]
socket = ""
[[route]]
domain = "sink.test"
to = %q
tls = "none"
[[route]]
domain = "dead.test"
to = "127.0.0.1:1"
tls = "none"
`, dataDir, relayAddr, sinkAddr)
	cfgPath := filepath.Join(t.TempDir(), "relay.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	sinkOut := &lockedWriter{}
	sinkCmd := exec.Command("/usr/sbin/smtp-sink", "-c", "-u", "nobody", sinkAddr, "1000")
	sinkCmd.Stdout = sinkOut
	if err := sinkCmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sinkCmd.Process.Kill(); sinkCmd.Wait() }()

	relayBinary(t) // built before the clock starts
	t0 := time.Now()
	p := startProc(t, cfgPath, relayAddr)
	startup := time.Since(t0)
	defer p.stop()

	t1 := time.Now()
	out, err := exec.Command("/usr/sbin/smtp-source", "-s", "20", "-l", "1024", "-m", strconv.Itoa(n),
		"-f", "a@src.test", "-t", "u@sink.test", relayAddr).CombinedOutput()
	if err != nil {
		t.Fatalf("smtp-source: %v\n%s", err, out)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for sinkOut.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("sink has %d of %d", sinkOut.count(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	rate := float64(n) / time.Since(t1).Seconds()
	return rate, startup, peakRSS(p.cmd.Process.Pid)
}

// lockedWriter collects smtp-sink's output: "mesg=N" records separated by
// carriage returns.
type lockedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// count returns the last message count smtp-sink reported.
func (w *lockedWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.buf.Bytes()
	i := bytes.LastIndex(b, []byte("mesg="))
	if i < 0 {
		return 0
	}
	j := i + 5
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	n, _ := strconv.Atoi(string(b[i+5 : j]))
	return n
}

// peakRSS reads a process's high-water resident set size.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
