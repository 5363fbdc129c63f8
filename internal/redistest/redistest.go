// Package redistest runs a real Redis for tests: Debian's redis-server on
// a loopback address the test gives, without persistence, stopped when
// the test ends. Tests skip with a message naming the package to install
// when redis-server is missing.
package redistest

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Bin is where Debian's redis-server package puts the server.
const Bin = "/usr/bin/redis-server"

// Server is a running redis-server.
type Server struct {
	// Addr is "ip:port" to put in [fleet] redis.
	Addr string
	args []string
	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs redis-server on ip (a free port) until the test ends, with
// args added to its command line ("--requirepass", "pw").
func Start(t testing.TB, ip string, args ...string) *Server {
	t.Helper()
	if _, err := os.Stat(Bin); err != nil {
		t.Skipf("%s not found (apt-get install redis-server): %v", Bin, err)
	}
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{Addr: addr, args: args, t: t}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Restart starts the server again on the same address after Stop (with
// no keys: nothing is saved).
func (s *Server) Restart() {
	s.t.Helper()
	ip, port, _ := net.SplitHostPort(s.Addr)
	s.cmd = exec.Command(Bin, append([]string{"--port", port, "--bind", ip, "--save", "", "--appendonly", "no",
		"--dir", s.t.TempDir()}, s.args...)...)
	out, err := os.CreateTemp(s.t.TempDir(), "redis-*.log")
	if err != nil {
		s.t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = out, out
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.done = make(chan struct{})
	go func() { s.cmd.Wait(); out.Close(); close(s.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for !s.pong() {
		select {
		case <-s.done:
			log, _ := os.ReadFile(out.Name())
			s.t.Fatalf("redis-server on %s exited: %s", s.Addr, log)
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.t.Fatalf("redis-server on %s did not answer PING within 10s", s.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pong reports whether the server answers PING (with PONG, or asking
// for the password that --requirepass set).
func (s *Server) pong() bool {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH"))
}

// Stop kills the server (as a crash would) and waits for it to exit; it
// does nothing if the server is not running.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}
