package integration

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestUnfinishedBigMessages: 100 sessions each send 20 MiB of a message
// and stop before its end. Bodies stream to files, so the relay's memory
// does not grow with sessions × message size: its peak VmRSS (mapped
// files included, as top and cgroups count them) stays under 300 MiB,
// where holding the bodies would take 2 GB. The sessions then finish:
// every message is accepted.
func TestUnfinishedBigMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 2 GB over loopback")
	}
	const sessions, size = 100, 20 << 20
	dir := t.TempDir()
	addr := freeAddr(t, "127.0.22.1")
	cfg := fmt.Sprintf(`hostname = "big.test"
data_dir = %q
local_domains = ["big.test"]
relay_networks = ["127.0.0.0/8"]
[smtp]
listen = [%q]
max_message_size = %d
max_connections = 200
[pop3]
listen = []
[[route]]
domain = "*"
to = "127.0.22.9:1"
tls = "none"
`, filepath.Join(dir, "data"), addr, 32<<20)
	path := filepath.Join(dir, "relay.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, path, addr)

	line := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 15) + "\r\n"
	chunk := []byte(strings.Repeat(line, (64<<10)/len(line)))
	var (
		wg      sync.WaitGroup
		sent    sync.WaitGroup // every session has sent its 20 MiB
		release = make(chan struct{})
		errs    = make(chan error, sessions)
	)
	sent.Add(sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := false
			defer func() {
				if !done {
					sent.Done()
				}
			}()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.22.%d", 10+i%50))}}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(3 * time.Minute))
			br := bufio.NewReader(c)
			expect := func(code string) error {
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return err
					}
					if !strings.HasPrefix(l, code) {
						return fmt.Errorf("want %s, got %q", code, l)
					}
					if len(l) > 3 && l[3] == ' ' {
						return nil
					}
				}
			}
			steps := []struct{ cmd, code string }{
				{"", "220"}, {"EHLO c.test\r\n", "250"}, {"MAIL FROM:<s@c.test>\r\n", "250"},
				{"RCPT TO:<postmaster@big.test>\r\n", "250"}, {"DATA\r\n", "354"},
			}
			for _, s := range steps {
				if s.cmd != "" {
					fmt.Fprint(c, s.cmd)
				}
				if err := expect(s.code); err != nil {
					errs <- err
					return
				}
			}
			fmt.Fprintf(c, "Subject: big %d\r\n\r\n", i)
			for n := 0; n < size; n += len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					errs <- err
					return
				}
			}
			done = true
			sent.Done()
			<-release
			fmt.Fprint(c, ".\r\n")
			if err := expect("250"); err != nil {
				errs <- fmt.Errorf("end of DATA: %w", err)
			}
		}()
	}
	peak := sampleVmRSS(p.cmd.Process.Pid)
	sent.Wait()
	time.Sleep(500 * time.Millisecond) // the last bytes reach the relay
	rss := peak()
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d sessions x %d MiB unfinished: relay peak VmRSS %d MiB", sessions, size>>20, rss>>20)
	if rss > 300<<20 {
		t.Errorf("peak VmRSS %d MiB, want at most 300 MiB", rss>>20)
	}
}

// sampleVmRSS samples a process's VmRSS every 20 ms until the returned
// function is called, which returns its peak in bytes.
func sampleVmRSS(pid int) func() int64 {
	anon := sampleRSS(pid)
	return func() int64 {
		a, f := anon()
		return a + f
	}
}
