package integration

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
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
	// Two batches: the first meets whatever compaction Badger starts when
	// it opens a spool another process left, the second the relay at work.
	var emptyRate float64
	for _, run := range []struct{ name, dir string }{{"empty", empty}, {"big spool", full}, {"empty again", empty}} {
		r := measureRelay(t, run.dir, n, 2)
		t.Logf("%-12s startup %5v  new mail end to end %5.0f then %5.0f msg/s  peak RSS %3d MiB (anonymous %3d, mapped files %3d)",
			run.name, r.startup.Round(time.Millisecond), r.rates[0], r.rates[1], r.rss>>20, r.anon>>20, r.file>>20)
		switch run.name {
		case "empty":
			emptyRate = r.rates[1]
		case "big spool":
			if r.startup > 5*time.Second {
				t.Errorf("startup took %v with the big spool, want < 5s", r.startup)
			}
			if r.rss > 250<<20 {
				t.Errorf("peak RSS %d MiB, want <= 250", r.rss>>20)
			}
			for i, rate := range r.rates {
				if rate < 0.8*emptyRate {
					t.Errorf("batch %d: new mail at %.0f msg/s, below 80%% of the empty spool's %.0f", i+1, rate, emptyRate)
				}
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
	next := time.Now().Add(24 * time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 32 {
				id, err := sp.Enqueue(context.Background(), spool.Envelope{From: "<a@src.test>"},
					[]spool.Recipient{{To: fmt.Sprintf("<u%d@dead.test>", i)}}, proseBody(i, 900))
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

// proseBody is a message of about n bytes of lines of words, different
// for each seed: it compresses about as well as mail does (Snappy: about
// 1.6x), where n repeated bytes would compress some fifty times and give
// a spool unlike any real one.
func proseBody(seed, n int) []byte {
	words := strings.Fields(`the of and to in is you that it he was for on are as with his they at be
		this have from or one had by word but not what all were we when your can said there use an each
		which she do how their if will up other about out many then them these so some her would make
		like him into time has look two more write go see number no way could people my than first water
		been call who oil its now find long down day did get come made may part queue relay message
		delivery server account invoice meeting tomorrow report attached please regards thanks`)
	r := rand.New(rand.NewPCG(uint64(seed), 7))
	b := []byte(fmt.Sprintf("Subject: deferred %d\r\nFrom: <a@src.test>\r\n\r\n", seed))
	line := 0
	for len(b) < n {
		w := words[r.IntN(len(words))]
		b = append(b, w...)
		line += len(w) + 1
		if line > 70 {
			b = append(b, "\r\n"...)
			line = 0
		} else {
			b = append(b, ' ')
		}
	}
	return append(b, "\r\n"...)
}

func du(dir string) string {
	out, _ := exec.Command("du", "-sh", dir).Output()
	return strings.Fields(string(out) + " ?")[0]
}

// measureRelay runs the relay binary on dataDir and pushes batches of n
// messages through it to smtp-sink, one batch after the other.
func measureRelay(t *testing.T, dataDir string, n, batches int) relayRun {
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

	peaks := sampleRSS(p.cmd.Process.Pid)
	run := relayRun{startup: startup}
	for b := 1; b <= batches; b++ {
		t1 := time.Now()
		out, err := exec.Command("/usr/sbin/smtp-source", "-s", "20", "-l", "1024", "-m", strconv.Itoa(n),
			"-f", "a@src.test", "-t", "u@sink.test", relayAddr).CombinedOutput()
		if err != nil {
			t.Fatalf("smtp-source: %v\n%s", err, out)
		}
		deadline := time.Now().Add(5 * time.Minute)
		for sinkOut.count() < b*n {
			if time.Now().After(deadline) {
				t.Fatalf("sink has %d of %d", sinkOut.count(), b*n)
			}
			time.Sleep(10 * time.Millisecond)
		}
		run.rates = append(run.rates, float64(n)/time.Since(t1).Seconds())
	}
	run.rss = peakRSS(p.cmd.Process.Pid)
	run.anon, run.file = peaks()
	return run
}

// relayRun is what measureRelay saw of one relay process.
type relayRun struct {
	startup time.Duration // from exec to listening
	rates   []float64     // end to end, msg/s, one per batch
	rss     int64         // peak resident set (VmHWM)
	// anon and file split the resident set at its sampled peaks:
	// anonymous memory (the Go heap, mostly) and mapped files (Badger's
	// tables and logs, page cache the kernel can take back).
	anon, file int64
}

// sampleRSS samples a process's RssAnon and RssFile every 20 ms until the
// returned function is called, which returns their peaks in bytes.
func sampleRSS(pid int) func() (anon, file int64) {
	stop, done := make(chan struct{}), make(chan struct{})
	var anon, file int64
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			for _, line := range strings.Split(string(b), "\n") {
				f := strings.Fields(line)
				if len(f) < 2 {
					continue
				}
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				switch f[0] {
				case "RssAnon:":
					anon = max(anon, kb<<10)
				case "RssFile:":
					file = max(file, kb<<10)
				}
			}
		}
	}()
	return func() (int64, int64) {
		close(stop)
		<-done
		return anon, file
	}
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
