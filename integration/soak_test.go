package integration

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSoak relays RELAY_SOAK small messages (1,000,000 for the full
// soak) through one relay subprocess in ten bursts into smtp-sink, then
// checks that the spool's disk use came back to within 2x its idle size,
// that RSS stayed bounded, and that no goroutines leaked. The retired-
// message history is off for it (history = "0"): by design the history
// window keeps ~330 bytes per message for its duration.
//
// Idle is the relay at rest after a warm-up burst of 2,000 messages, once
// its spool has compacted; the goroutine count is taken then too.
func TestSoak(t *testing.T) {
	total, _ := strconv.Atoi(os.Getenv("RELAY_SOAK"))
	if total == 0 {
		t.Skip("set RELAY_SOAK=1000000 to run the soak test")
	}
	for _, p := range []string{"/usr/sbin/smtp-source", "/usr/sbin/smtp-sink"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s missing (Debian package postfix)", p)
		}
	}
	dir := t.TempDir()
	relayAddr, sinkAddr, metricsAddr := freeAddr(t, "127.0.0.245"), freeAddr(t, "127.0.0.246"), freeAddr(t, "127.0.0.247")
	cfg := fmt.Sprintf(`hostname = "relay.test"
data_dir = %q
local_domains = ["relay.test"]
[smtp]
listen = [%q]
[pop3]
listen = []
[admin]
socket = ""
metrics_listen = %q
history = "0"
[[route]]
domain = "sink.test"
to = %q
tls = "none"
`, filepath.Join(dir, "data"), relayAddr, metricsAddr, sinkAddr)
	cfgPath := filepath.Join(dir, "relay.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	sink := &lockedWriter{}
	sinkCmd := exec.Command("/usr/sbin/smtp-sink", "-c", "-u", "nobody", sinkAddr, "1000")
	sinkCmd.Stdout = sink
	if err := sinkCmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sinkCmd.Process.Kill(); sinkCmd.Wait() }()
	p := startProc(t, cfgPath, relayAddr)
	defer p.stop()

	spoolDir := filepath.Join(dir, "data", "spool")
	send := func(what string, n, want int) {
		out, err := exec.Command("/usr/sbin/smtp-source", "-s", "20", "-l", "512", "-m", strconv.Itoa(n),
			"-f", "a@src.test", "-t", "u@sink.test", relayAddr).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: smtp-source: %v\n%s", what, err, out)
		}
		for deadline := time.Now().Add(10 * time.Minute); sink.count() < want; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: sink has %d of %d", what, sink.count(), want)
			}
		}
	}
	const warmup = 2000
	send("warm-up", warmup, warmup)
	drainedDisk := dirSize(t, spoolDir)
	// The spool compacts at its first GC tick (every minute) with the
	// queue empty.
	waitLog(t, cfgPath+".log", "spool: compacted after the queue drained", 3*time.Minute)
	idleDisk := dirSize(t, spoolDir)
	time.Sleep(6 * time.Second) // idle sessions to the sink close after 5s
	idleG := metric(t, metricsAddr, "go_goroutines")
	t.Logf("idle after %d messages: spool %d KiB (%d KiB before it compacted), %v goroutines", warmup, idleDisk>>10, drainedDisk>>10, idleG)

	start := time.Now()
	burst := total / 10
	peakDisk := int64(0)
	for b := 0; b < 10; b++ {
		want := warmup + (b+1)*burst
		send(fmt.Sprintf("burst %d", b+1), burst, want)
		peakDisk = max(peakDisk, dirSize(t, spoolDir))
		t.Logf("burst %d: %d delivered in %v; spool %d MiB; RSS %d MiB", b+1, want-warmup, time.Since(start).Round(time.Second),
			dirSize(t, spoolDir)>>20, int64(metric(t, metricsAddr, "process_resident_memory_bytes"))>>20)
		time.Sleep(2 * time.Second)
	}
	rate := float64(total) / time.Since(start).Seconds()
	// Let compaction and value-log GC catch up.
	var endDisk int64
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(5 * time.Second) {
		endDisk = dirSize(t, spoolDir)
		if endDisk <= 2*idleDisk || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(6 * time.Second) // idle sessions to the sink close after 5s
	endG := metric(t, metricsAddr, "go_goroutines")
	rss := peakRSS(p.cmd.Process.Pid)
	t.Logf("%d messages at %.0f msg/s; spool idle %d KiB, peak %d MiB, end %d KiB; peak RSS %d MiB; goroutines %v -> %v",
		total, rate, idleDisk>>10, peakDisk>>20, endDisk>>10, rss>>20, idleG, endG)
	logSpoolFiles(t, spoolDir)
	if endDisk > 2*idleDisk {
		t.Errorf("spool disk use %d KiB after the soak, more than 2x idle (%d KiB)", endDisk>>10, idleDisk>>10)
	}
	if rss > 400<<20 {
		t.Errorf("peak RSS %d MiB", rss>>20)
	}
	if endG > idleG+5 {
		t.Errorf("goroutines %v before, %v after: a leak", idleG, endG)
	}
}

// waitLog waits until the file at path holds text.
func waitLog(t *testing.T, path, text string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(time.Second) {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), text) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q not in %s after %v", text, path, timeout)
		}
	}
}

// dirSize sums the disk blocks allocated to the files under dir, as du
// does: Badger preallocates sparse files, so their lengths say little.
func dirSize(t *testing.T, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// metric reads one unlabelled sample from the relay's /metrics.
func metric(t *testing.T, addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	io.Copy(io.Discard, resp.Body)
	t.Fatalf("no metric %s", name)
	return 0
}

// logSpoolFiles says which of Badger's files hold the space (memtable
// logs .mem, tables .sst, value logs .vlog).
func logSpoolFiles(t *testing.T, dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks > 0 {
				t.Logf("  %-16s %8d KiB allocated, %8d KiB long", e.Name(), st.Blocks*512>>10, fi.Size()>>10)
			}
		}
	}
}
