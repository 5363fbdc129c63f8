package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/relay-mta/relay/spool"
)

// writeConfig writes a relay config whose route for every domain points at
// a closed port, so accepted mail stays queued (deferred) and the spool can
// be inspected after the daemon dies.
func writeConfig(t *testing.T, dir, listen string) string {
	t.Helper()
	cfg := fmt.Sprintf(`hostname = "b.test"
data_dir = %q
local_domains = ["b.test"]
relay_networks = ["127.0.0.0/8"]
[smtp]
listen = [%q]
[pop3]
listen = []
[admin]
socket = ""
[[route]]
domain = "*"
to = "127.0.0.1:1"
tls = "none"
`, dir, listen)
	path := filepath.Join(dir, "relay.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sendOne submits one message and returns the queue ID from the 250 reply.
func sendOne(addr, from, to, body string) (string, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.Hello("sender.test"); err != nil {
		return "", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "", err
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	c.Quit()
	_, id, ok := strings.Cut(resp.StatusText, "queued as ")
	if !ok {
		return "", fmt.Errorf("no queue ID in %q", resp.StatusText)
	}
	return id, nil
}

// TestCrashLosesNothing kills a loaded relay with SIGKILL several times.
// After each restart every message that got a 250 must be in the spool,
// byte-exact.
func TestCrashLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test skipped in -short mode")
	}
	dir := t.TempDir()
	addr := freeAddr(t, "127.0.0.2")
	cfgPath := writeConfig(t, dir, addr)

	var (
		mu    sync.Mutex
		acked = map[string]string{} // queue ID -> body sent
		seq   atomic.Int64
	)
	const rounds, senders = 4, 16
	for round := 0; round < rounds; round++ {
		p := startProc(t, cfgPath, addr)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for s := 0; s < senders; s++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					n := seq.Add(1)
					body := fmt.Sprintf("Subject: crash %d\r\n\r\n%s\r\n", n, strings.Repeat(fmt.Sprintf("line %d\r\n", n), int(n%50)))
					id, err := sendOne(addr, "a@sender.test", fmt.Sprintf("u%d@elsewhere.test", n), body)
					if err != nil {
						time.Sleep(5 * time.Millisecond) // the relay is down; try again
						continue
					}
					mu.Lock()
					acked[id] = body
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(400+rand.IntN(600)) * time.Millisecond)
		p.kill()
		close(stop)
		wg.Wait()

		mu.Lock()
		n := len(acked)
		mu.Unlock()
		checkSpool(t, dir, acked)
		t.Logf("round %d: %d messages acknowledged so far, all in the spool", round+1, n)
	}
	if len(acked) < 100 {
		t.Fatalf("only %d messages acknowledged; the load did not happen", len(acked))
	}
}

// checkSpool opens the dead relay's spool and checks every acknowledged
// message is there with its body intact.
func checkSpool(t *testing.T, dir string, acked map[string]string) {
	t.Helper()
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(dir, "spool"), GCInterval: -1})
	if err != nil {
		t.Fatalf("reopen spool after crash: %v", err)
	}
	defer sp.Close()
	lost := 0
	for id, want := range acked {
		got, err := sp.Body(id)
		if err != nil || !strings.HasSuffix(string(got), want) {
			lost++
			if lost < 5 {
				t.Errorf("message %s acknowledged but lost or changed (err=%v)", id, err)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged messages lost", lost, len(acked))
	}
}
