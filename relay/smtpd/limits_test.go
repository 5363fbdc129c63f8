package smtpd

import (
	"bufio"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// dialFrom connects to addr from the loopback address local.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// TestThousandIdleConnectionsFromOneIP: the per-address limit holds and
// a client from another address is still served within a second.
func TestThousandIdleConnectionsFromOneIP(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 connections")
	}
	addr := startServer(t, &Server{MaxConnsPerIP: 20, MaxConnections: 2000})
	held, refused := 0, 0
	for i := 0; i < 1000; i++ {
		nc := dialFrom(t, "127.0.0.1", addr)
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(nc).ReadString('\n')
		switch {
		case err == nil && strings.HasPrefix(line, "220 "):
			held++
		case err == nil && strings.HasPrefix(line, "421 4.7.0"):
			refused++
		default:
			t.Fatalf("connection %d: %q, %v", i, line, err)
		}
	}
	if held != 20 || refused != 980 {
		t.Fatalf("held %d, refused %d; want 20 and 980", held, refused)
	}
	start := time.Now()
	nc := dialFrom(t, "127.0.0.2", addr)
	c := &client{t: t, nc: nc, r: bufio.NewReader(nc)}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	c.expect("220 ")
	c.cmd("EHLO other.test", "250 ")
	c.cmd("QUIT", "221 ")
	if d := time.Since(start); d > time.Second {
		t.Fatalf("another client was served in %v, want < 1s", d)
	}
	t.Logf("1,000 connections from one IP: %d held, %d refused; another client served in %v", held, refused, time.Since(start).Round(time.Millisecond))
}

// TestSessionTimeLimit: a client that sends a byte every 200ms never trips
// the idle timeout, but is cut off at the session limit with 421.
func TestSessionTimeLimit(t *testing.T) {
	addr := startServer(t, &Server{SessionTimeout: time.Second, CommandTimeout: 5 * time.Second})
	c := dial(t, addr)
	start := time.Now()
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				c.nc.Write([]byte("N")) // a NOOP that never ends
			}
		}
	}()
	defer close(stop)
	c.expect("421 4.4.2")
	if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
		t.Fatalf("cut off after %v, want about 1s", d)
	}
}

func TestMaxCommands(t *testing.T) {
	addr := startServer(t, &Server{MaxCommands: 5})
	c := dial(t, addr)
	for i := 0; i < 5; i++ {
		c.cmd("NOOP", "250 ")
	}
	c.cmd("NOOP", "421 4.7.0")
}

func TestSessionRecipientLimit(t *testing.T) {
	addr := startServer(t, &Server{MaxSessionRcpts: 3})
	c := dial(t, addr)
	c.cmd("EHLO c.test", "250 ")
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<u1@c.test>", "250 ")
	c.cmd("RCPT TO:<u2@c.test>", "250 ")
	c.cmd("RSET", "250 ")
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<u3@c.test>", "250 ")
	c.cmd("RCPT TO:<u4@c.test>", "452 4.5.3")
}

// TestTarpit: after TarpitAfter refused recipients each further refusal
// comes TarpitDelay later than the one before.
func TestTarpit(t *testing.T) {
	addr := startServer(t, &Server{TarpitAfter: 2, TarpitDelay: 200 * time.Millisecond, MaxErrors: 100})
	c := dial(t, addr)
	c.cmd("EHLO c.test", "250 ")
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	var took []time.Duration
	for i := 0; i < 4; i++ {
		start := time.Now()
		c.cmd("RCPT TO:<nobody@c.test>", "550 5.1.1")
		took = append(took, time.Since(start))
	}
	if took[0] > 100*time.Millisecond || took[1] > 100*time.Millisecond || took[2] < 200*time.Millisecond || took[3] < 400*time.Millisecond {
		t.Fatalf("refusals took %v; want fast, fast, >=200ms, >=400ms", took)
	}
	start := time.Now()
	c.cmd("RCPT TO:<u@c.test>", "250 ") // accepted recipients are never slowed
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("an accepted recipient took %v", d)
	}
}

// TestPerIPLimitTrusted: addresses the relay trusts (its own networks)
// have a per-address limit of their own, larger than the outsiders' one
// but a limit all the same.
func TestPerIPLimitTrusted(t *testing.T) {
	addr := startServerOn(t, &Server{MaxConnsPerIP: 2, MaxConnsPerTrustedIP: 5, Trusted: func(ip netip.Addr) bool { return ip.String() == "127.0.20.31" }}, "127.0.20.1:0")
	for i := 0; i < 5; i++ {
		session(t, "127.0.20.31", addr).expect("220 ")
	}
	session(t, "127.0.20.31", addr).expect("421 4.7.0 mx.test Too many connections from your address")
	session(t, "127.0.20.32", addr).expect("220 ")
	session(t, "127.0.20.32", addr).expect("220 ")
	session(t, "127.0.20.32", addr).expect("421 4.7.0 mx.test Too many connections from your address")
}
