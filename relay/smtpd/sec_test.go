package smtpd

import (
	"bufio"
	"net"
	"net/netip"
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

// TestReservedSlotsAndEviction: outside clients together never hold the
// slots reserved for privileged ones; a privileged client arriving at a
// full server takes the slot of the longest-idle outside session, which
// is told why; an outsider arriving then is refused.
func TestReservedSlotsAndEviction(t *testing.T) {
	trusted := func(ip netip.Addr) bool { return ip.String() == "127.0.20.60" }
	addr := startServerOn(t, &Server{MaxConnections: 10, ReservedConnections: 2, StressConnections: 100, Trusted: trusted}, "127.0.20.1:0")
	var outside []*client
	for i := 0; i < 8; i++ {
		c := session(t, "127.0.20.61", addr)
		c.expect("220 ")
		outside = append(outside, c)
	}
	// The outsiders' share is full; a ninth one cannot take a reserved slot
	// (the others have not been idle for a second yet).
	session(t, "127.0.20.62", addr).expect("421 4.7.0 mx.test Too many connections")
	for i := 0; i < 2; i++ {
		c := session(t, "127.0.20.60", addr)
		c.expect("220 ")
		c.cmd("EHLO inside.test", "250 ")
	}
	time.Sleep(20 * time.Millisecond)
	outside[0].cmd("NOOP", "250 ") // no longer the longest idle
	// Full: the next privileged client takes the slot of outside[1].
	start := time.Now()
	c := session(t, "127.0.20.60", addr)
	c.expect("220 ")
	c.cmd("EHLO inside.test", "250 ")
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<u@b.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.cmd("Subject: x\r\n\r\nhi\r\n.", "250 2.0.0")
	c.cmd("QUIT", "221 ")
	if d := time.Since(start); d > time.Second {
		t.Fatalf("privileged transaction on a full server took %v", d)
	}
	outside[1].expect("421 4.7.0 mx.test closing idle session, server busy")
	outside[0].cmd("NOOP", "250 ")
	outside[2].cmd("NOOP", "250 ")
}

// TestStressMode: from StressConnections open sessions on, an outside
// session gets StressTimeout to send a command, and outside sessions
// idle longer are closed when a new client arrives; privileged sessions
// keep the normal timeout.
func TestStressMode(t *testing.T) {
	trusted := func(ip netip.Addr) bool { return ip.String() == "127.0.20.70" }
	addr := startServerOn(t, &Server{MaxConnections: 100, StressConnections: 5, StressTimeout: 300 * time.Millisecond,
		CommandTimeout: time.Minute, Trusted: trusted}, "127.0.20.1:0")
	in := session(t, "127.0.20.70", addr)
	in.expect("220 ")
	var early []*client
	for i := 0; i < 3; i++ { // below stress: their reads wait a minute
		c := session(t, "127.0.20.71", addr)
		c.expect("220 ")
		early = append(early, c)
	}
	time.Sleep(400 * time.Millisecond)
	// A fifth connection: under stress now; the early ones have been idle
	// past the stress timeout and go to make room.
	late := session(t, "127.0.20.72", addr)
	late.expect("220 ")
	for _, c := range early {
		c.expect("421 4.7.0 mx.test closing idle session, server busy")
	}
	// The late one waits for a command under stress: 300ms, not a minute.
	start := time.Now()
	late.expect("421 4.4.2")
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("an outside session under stress waited %v for a command", d)
	}
	in.cmd("NOOP", "250 ") // the privileged session is still there
}

// TestAuthMakesSessionPrivileged: a session that authenticates leaves
// the outsiders' share and is never closed to make room.
func TestAuthMakesSessionPrivileged(t *testing.T) {
	trusted := func(ip netip.Addr) bool { return ip.String() == "127.0.20.80" }
	addr := startServerOn(t, &Server{MaxConnections: 4, ReservedConnections: 1, StressConnections: 100,
		EnableAuth: true, AllowInsecureAuth: true, Trusted: trusted}, "127.0.20.1:0")
	authed := session(t, "127.0.20.81", addr)
	authed.expect("220 ")
	authed.cmd("EHLO c.test", "250 ")
	authed.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "235 ")
	var outside []*client
	for i := 0; i < 3; i++ { // the outsiders' share is 3, and alice is not in it
		c := session(t, "127.0.20.82", addr)
		c.expect("220 ")
		outside = append(outside, c)
	}
	// Full. A privileged client takes the slot of an idle outsider, not
	// alice's, though hers has been idle longest.
	in := session(t, "127.0.20.80", addr)
	in.expect("220 ")
	outside[0].expect("421 4.7.0 mx.test closing idle session, server busy")
	authed.cmd("NOOP", "250 ")
}
