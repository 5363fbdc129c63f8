package smtpd

import (
	"bufio"
	"net"
	"strconv"
	"testing"
	"time"
)

// The tests of this file listen and dial on 127.0.20.0/24 only.

// startServerOn runs srv on addr (127.0.20.x:0) and returns its address.
func startServerOn(t *testing.T, srv *Server, addr string) string {
	t.Helper()
	if srv.Backend == nil {
		srv.Backend = &recBackend{}
	}
	if srv.Hostname == "" {
		srv.Hostname = "mx.test"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// session connects to addr from the source address from.
func session(t *testing.T, from, addr string) *client {
	t.Helper()
	nc := dialFrom(t, from, addr)
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	return &client{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// TestBDATSizeDigitsOnly: "BDAT +5 LAST" (and other sizes that are not
// 1*DIGIT) is refused, and the session closed, since the chunk cannot be
// told from commands; digits alone still work, leading zeros included.
func TestBDATSizeDigitsOnly(t *testing.T) {
	b := &recBackend{}
	addr := startServerOn(t, &Server{Backend: b}, "127.0.20.1:0")
	for _, size := range []string{"+5", "-0", " +5", "5_0", "0x5", "５", "+0"} {
		c := session(t, "127.0.20.21", addr)
		c.expect("220 ")
		c.cmd("EHLO c.test", "250 ")
		c.cmd("MAIL FROM:<a@b.test>", "250 ")
		c.cmd("RCPT TO:<u@b.test>", "250 ")
		c.send("BDAT " + size + " LAST\r\nhello")
		c.expect("501 5.5.4")
		c.expect("421 4.7.0")
	}
	c := session(t, "127.0.20.21", addr)
	c.expect("220 ")
	c.cmd("EHLO c.test", "250 ")
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<u@b.test>", "250 ")
	c.send("BDAT 008 LAST\r\nhi\r\nyo\r\n")
	c.expect("250 2.0.0")
	if msgs := b.messages(); len(msgs) != 1 || string(msgs[0].body) != "hi\r\nyo\r\n" {
		t.Fatalf("messages: %+v", msgs)
	}
}

// FuzzChunkSize: chunkDigits passes exactly the strings of ASCII digits,
// so that ParseInt of its answer accepts nothing RFC 3030's 1*DIGIT does
// not.
func FuzzChunkSize(f *testing.F) {
	for _, s := range []string{"5", "+5", "-5", "007", "", "99999999999999999999", "1_0", "0x10", " 5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := strconv.ParseInt(chunkDigits(s), 10, 64)
		if err != nil {
			return
		}
		for i := 0; i < len(s); i++ {
			if s[i] < '0' || s[i] > '9' {
				t.Fatalf("%q accepted as chunk size %d", s, n)
			}
		}
		if n < 0 {
			t.Fatalf("%q: negative size %d", s, n)
		}
	})
}
