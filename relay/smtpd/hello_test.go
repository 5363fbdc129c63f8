package smtpd

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// TestHelloNameTooLong: an EHLO or HELO name over 255 octets (no domain is
// longer) is refused with 501 5.5.2: it would go into the Received field
// and make a line longer than mail allows. 255 octets are accepted.
func TestHelloNameTooLong(t *testing.T) {
	srv, cli := net.Pipe()
	defer cli.Close()
	go (&Server{Hostname: "mx.test", Backend: &recBackend{}}).ServeConn(srv)
	cli.SetDeadline(time.Now().Add(10 * time.Second))
	c := &client{t: t, nc: cli, r: bufio.NewReader(cli)}
	c.expect("220 ")
	c.cmd("EHLO "+strings.Repeat("h", 251)+".test", "501 5.5.2 Host name too long")
	c.cmd("HELO "+strings.Repeat("h", 251)+".test", "501 5.5.2 Host name too long")
	c.cmd("MAIL FROM:<a@a.test>", "503 5.5.1")
	c.cmd("HELO "+strings.Repeat("h", 250)+".test", "250 ")
}
