package deliver

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// noDeadlineConn lets readReply run over a plain reader.
type noDeadlineConn struct{ net.Conn }

func (noDeadlineConn) SetReadDeadline(time.Time) error { return nil }

func replyReader(in string) *clientSession {
	return &clientSession{conn: noDeadlineConn{}, br: bufio.NewReaderSize(strings.NewReader(in), maxReplyLine)}
}

func TestReadReply(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"250 ok\r\n", "250 ok"},
		{"250\r\n", "250"},
		{"550-5.1.1 first\r\n550 5.1.1 second\r\n", "550 5.1.1 first 5.1.1 second"},
		{"451 4.3.0 bell\x07 here\r\n", "451 4.3.0 bell? here"},
		{"250 lf only\n", "250 lf only"},
	} {
		r, err := replyReader(tc.in).readReply(time.Second)
		if err != nil || r.text != tc.want {
			t.Errorf("readReply(%q) = %q, %v; want %q", tc.in, r.text, err, tc.want)
		}
	}
	for _, in := range []string{
		"",                   // EOF
		"25 short\r\n",       // two digits
		"2x0 bad\r\n",        // not a number
		"250_ok\r\n",         // bad separator
		"250-a\r\n550 b\r\n", // codes differ
		"099 low\r\n",        // below 100
		"250-" + strings.Repeat("x", maxReplyLine) + "\r\n", // line too long
		strings.Repeat("250-x\r\n", maxReplyLines+1) + "250 y\r\n",
	} {
		if r, err := replyReader(in).readReply(time.Second); err == nil {
			t.Errorf("readReply(%.40q) = %+v, want an error", in, r)
		}
	}
}

// FuzzReadReply: whatever a server sends, readReply returns an error or a
// reply whose text is one line beginning with its code.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"250 ok\r\n", "550-a\r\n550 b\r\n", "354 go\r\n", "421-x\r\n421 y\r\n", "250\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &clientSession{conn: noDeadlineConn{}, br: bufio.NewReaderSize(bytes.NewReader(in), maxReplyLine)}
		r, err := s.readReply(time.Second)
		if err != nil {
			return
		}
		if r.code < 100 || r.code > 999 || !strings.HasPrefix(r.text, strconv.Itoa(r.code)) {
			t.Fatalf("reply %+v from %q", r, in)
		}
		if strings.ContainsAny(r.text, "\r\n") {
			t.Fatalf("reply text %q is not one line", r.text)
		}
	})
}
