package smtpd

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// fromAddr is one end of a pipe that says it comes from remote.
type fromAddr struct {
	net.Conn
	remote net.Addr
}

func (c fromAddr) RemoteAddr() net.Addr { return c.remote }

// TestLoginsInTheClear: with LoopbackIsSecure, AUTH is offered and
// accepted without TLS for a client on a loopback address (Dovecot's
// rule), and still refused with 538 5.7.11 for any other client.
func TestLoginsInTheClear(t *testing.T) {
	s := &Server{Hostname: "mx.test", Backend: &recBackend{}, EnableAuth: true, LoopbackIsSecure: true}
	session := func(ip string) *client {
		srv, cli := net.Pipe()
		t.Cleanup(func() { cli.Close() })
		go s.ServeConn(fromAddr{srv, &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}})
		cli.SetDeadline(time.Now().Add(10 * time.Second))
		c := &client{t: t, nc: cli, r: bufio.NewReader(cli)}
		c.expect("220 ")
		return c
	}
	ehlo := func(c *client) string {
		c.send("EHLO c.test\r\n")
		var lines []string
		for {
			line, err := c.r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, strings.TrimSpace(line))
			if len(line) > 3 && line[3] == ' ' {
				return strings.Join(lines, "|")
			}
		}
	}
	for _, ip := range []string{"127.0.24.9", "::1"} {
		c := session(ip)
		if got := ehlo(c); !strings.Contains(got, "AUTH PLAIN LOGIN") {
			t.Errorf("EHLO to a client on %s: %s, want AUTH offered", ip, got)
		}
		c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "235 2.7.0")
	}
	for _, ip := range []string{"192.0.2.7", "2001:db8::7"} {
		c := session(ip)
		if got := ehlo(c); strings.Contains(got, "AUTH") {
			t.Errorf("EHLO to a client on %s without TLS: %s, want no AUTH", ip, got)
		}
		c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "538 5.7.11")
	}
}
