// Package smtptest is a raw SMTP client for tests. It writes command
// lines exactly as given and checks the start of each reply, so a test
// can send what a client library would refuse to (odd routes, bare line
// ends, smuggling attempts) and assert the precise reply code.
package smtptest

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Client is one SMTP connection. A failed read or write, or a reply that
// does not start as expected, fails the test.
type Client struct {
	T    testing.TB
	Conn net.Conn
	R    *bufio.Reader
}

// Dial connects to addr, reads the 220 greeting, and closes the
// connection when the test ends. Every read and write must be done within
// 20 seconds of the dial.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := &Client{T: t, Conn: nc, R: bufio.NewReader(nc)}
	c.Expect("220 ")
	return c
}

// Expect reads one reply, skipping its continuation lines, checks that
// its last line starts with prefix, and returns that line.
func (c *Client) Expect(prefix string) string {
	c.T.Helper()
	for {
		line, err := c.R.ReadString('\n')
		if err != nil {
			c.T.Fatalf("read: %v", err)
		}
		if len(line) >= 4 && line[3] == '-' {
			continue
		}
		if !strings.HasPrefix(line, prefix) {
			c.T.Fatalf("want %q..., got %q", prefix, line)
		}
		return strings.TrimSpace(line)
	}
}

// Cmd sends a command line and checks that the reply starts with want
// ("" for any reply); it returns the reply's last line.
func (c *Client) Cmd(line, want string) string {
	c.T.Helper()
	if _, err := io.WriteString(c.Conn, line+"\r\n"); err != nil {
		c.T.Fatal(err)
	}
	return c.Expect(want)
}

// Send submits one message (body already dot-stuffed, ending with CRLF)
// and returns the queue ID from the 250 reply.
func (c *Client) Send(from string, to []string, body string) string {
	c.T.Helper()
	c.Cmd("MAIL FROM:"+from, "250 ")
	for _, r := range to {
		c.Cmd("RCPT TO:"+r, "250 ")
	}
	c.Cmd("DATA", "354 ")
	got := c.Cmd(body+".", "250 2.0.0 OK: queued as ")
	return got[strings.LastIndex(got, " ")+1:]
}
