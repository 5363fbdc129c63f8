package integration

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/relay/smtpd/smtptest"
)

// TestSMTPSmuggling sends the known smuggling shapes through relay A
// toward relay B: a fake end of data followed by a second transaction.
// Either A refuses the message, or B receives exactly the one message that
// was sent; the hidden one must never become a message of its own.
func TestSMTPSmuggling(t *testing.T) {
	a, b := newNode(t, "a", "127.0.0.171"), newNode(t, "b", "127.0.0.172")
	b.start()
	a.route("b.test", b.addr)
	a.start()
	payloads := map[string]string{
		"LF.LF":     "\n.\n",
		"LF.CRLF":   "\n.\r\n",
		"CR.CR":     "\r.\r",
		"CRLF.LF":   "\r\n.\n",
		"CR.CRLF":   "\r.\r\n",
		"LF.LF-end": "\n.\n\r\n",
	}
	accepted := 0
	for name, p := range payloads {
		c := smtptest.Dial(t, a.addr)
		c.Cmd("EHLO sender.test", "250 ")
		c.Cmd("MAIL FROM:<alice@a.test>", "250 ")
		c.Cmd("RCPT TO:<bob@b.test>", "250 ")
		c.Cmd("DATA", "354 ")
		smuggled := "MAIL FROM:<evil@a.test>\r\nRCPT TO:<bob@b.test>\r\nDATA\r\nSubject: smuggled " + name + "\r\n\r\nevil\r\n.\r\n"
		// The smuggled transaction's own "\r\n.\r\n" is the real end of DATA.
		io.WriteString(c.Conn, "Subject: carrier "+name+"\r\n\r\nhello"+p+smuggled)
		reply := c.Expect("")
		switch {
		case strings.HasPrefix(reply, "250 "):
			accepted++
		case strings.HasPrefix(reply, "5"):
		default:
			t.Fatalf("%s: reply %q", name, reply)
		}
		// The session is still in step: the smuggled commands were never
		// read as commands.
		c.Cmd("NOOP", "250 ")
		c.Cmd("QUIT", "221 ")
		t.Logf("%-9s A answered %q", name, reply)
	}
	time.Sleep(time.Second) // anything forwarded arrives now
	got := b.mailbox("bob")
	for _, s := range got {
		if strings.HasPrefix(s, "smuggled") {
			t.Errorf("a smuggled message reached B: %q", s)
		}
	}
	if len(got) != accepted {
		t.Errorf("B received %d messages, A accepted %d", len(got), accepted)
	}
}
