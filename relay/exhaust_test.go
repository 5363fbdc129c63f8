package relay

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestIdleFloodLeavesRoomForRelayNetworks is issue 18, item 3, as an
// attacker does it: 10 outside addresses open 50 idle sessions each
// (max_conns_per_ip = 50, max_connections = 500). The outsiders get at
// most max_connections minus the reserved tenth, and a relay_networks
// client still completes a whole transaction in under a second.
func TestIdleFloodLeavesRoomForRelayNetworks(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 500 connections")
	}
	cfg := secConfig(t)
	cfg.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.20.100/32")}
	r, _ := launch(t, cfg, Options{}, nil)
	addr := r.SMTPAddrs()[0]

	var (
		mu            sync.Mutex
		held, refused int
		conns         []net.Conn
		wg            sync.WaitGroup
	)
	for a := 0; a < 10; a++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.20.%d", 40+a))}, Timeout: 5 * time.Second}
			for i := 0; i < 50; i++ {
				nc, err := d.Dial("tcp", addr)
				if err != nil {
					t.Error(err)
					return
				}
				nc.SetReadDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(nc).ReadString('\n')
				mu.Lock()
				conns = append(conns, nc)
				switch {
				case err == nil && strings.HasPrefix(line, "220 "):
					held++
				case err == nil && strings.HasPrefix(line, "421 4.7.0"):
					refused++
				default:
					t.Errorf("outside connection: %q, %v", line, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, nc := range conns {
			nc.Close()
		}
	})
	if held > 450 {
		t.Fatalf("outside clients hold %d sessions; the reserved tenth of 500 is not kept", held)
	}
	start := time.Now()
	c := dialFrom(t, "127.0.20.100", addr, "220 ")
	c.Cmd("EHLO inside.test", "250 ")
	c.Cmd("MAIL FROM:<x@inside.test>", "250 ")
	c.Cmd("RCPT TO:<u@elsewhere.test>", "250 ")
	c.Cmd("DATA", "354 ")
	c.Cmd("Subject: through the flood\r\n\r\nhello\r\n.", "250 2.0.0")
	c.Cmd("QUIT", "221 ")
	took := time.Since(start)
	t.Logf("10 addresses × 50 idle sessions: %d held, %d refused; a relay_networks transaction took %v", held, refused, took.Round(time.Millisecond))
	if took >= time.Second {
		t.Fatalf("relay_networks transaction under the flood took %v, want < 1s", took)
	}
}
