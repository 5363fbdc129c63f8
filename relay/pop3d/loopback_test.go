package pop3d

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

// pipeSession serves one connection that claims to come from ip and
// returns a function that sends a command and returns the response line.
func pipeSession(t *testing.T, s *Server, ip string) func(string) string {
	t.Helper()
	srv, cli := net.Pipe()
	t.Cleanup(func() { cli.Close() })
	go s.ServeConn(fromAddr{srv, &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}})
	br := bufio.NewReader(cli)
	read := func() string {
		cli.SetReadDeadline(time.Now().Add(5 * time.Second))
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return strings.TrimSuffix(l, "\r\n")
	}
	if g := read(); !strings.HasPrefix(g, "+OK") {
		t.Fatalf("greeting %q", g)
	}
	return func(line string) string {
		cli.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := cli.Write([]byte(line + "\r\n")); err != nil {
			t.Fatal(err)
		}
		return read()
	}
}

// TestLoginsInTheClear: with LoopbackIsSecure, USER and PASS work
// without TLS for a client on a loopback address (Dovecot's rule) and
// are still refused, before the password is sent, for any other client.
func TestLoginsInTheClear(t *testing.T) {
	s := &Server{Hostname: "pop.test", Backend: newFakeBackend(), LoopbackIsSecure: true}
	// One user per address: a maildrop is unlocked only after QUIT's answer.
	for ip, login := range map[string][2]string{"127.0.24.9": {"alice", "secret pw"}, "::1": {"bob", "pw"}} {
		cmd := pipeSession(t, s, ip)
		if got := cmd("USER " + login[0]); !strings.HasPrefix(got, "+OK") {
			t.Fatalf("USER from %s: %q", ip, got)
		}
		if got := cmd("PASS " + login[1]); !strings.HasPrefix(got, "+OK") {
			t.Fatalf("PASS from %s: %q", ip, got)
		}
		cmd("QUIT")
	}
	for _, ip := range []string{"192.0.2.7", "2001:db8::7"} {
		cmd := pipeSession(t, s, ip)
		if got := cmd("USER alice"); !strings.HasPrefix(got, "-ERR [AUTH] Plaintext login is not allowed without TLS") {
			t.Fatalf("USER from %s without TLS: %q", ip, got)
		}
		cmd("QUIT")
	}
	// Without LoopbackIsSecure a loopback client needs TLS like any other.
	strict := &Server{Hostname: "pop.test", Backend: newFakeBackend()}
	if got := pipeSession(t, strict, "127.0.24.9")("USER alice"); !strings.HasPrefix(got, "-ERR [AUTH]") {
		t.Fatalf("USER from loopback, LoopbackIsSecure unset: %q", got)
	}
}
