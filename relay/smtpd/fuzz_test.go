package smtpd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// panicCatcher is a slog handler that remembers panics the connection
// recovered from, so the fuzzer can fail on them: serve() turns a panic
// into a 421 reply, which would otherwise hide it.
type panicCatcher struct {
	mu     sync.Mutex
	panics []string
}

func (h *panicCatcher) Enabled(context.Context, slog.Level) bool { return true }
func (h *panicCatcher) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		var v string
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "panic" || a.Key == "stack" {
				v += a.Value.String() + "\n"
			}
			return true
		})
		if !strings.Contains(v, "backend bug") { // the test backend's own panic
			h.mu.Lock()
			h.panics = append(h.panics, v)
			h.mu.Unlock()
		}
	}
	return nil
}
func (h *panicCatcher) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *panicCatcher) WithGroup(string) slog.Handler      { return h }

// FuzzSession feeds arbitrary client input through a whole session: the
// command parser, the path and parameter parsers, DATA and BDAT framing and
// AUTH. It must never panic and never hang.
func FuzzSession(f *testing.F) {
	seeds := []string{
		"EHLO a\r\nMAIL FROM:<a@b> SIZE=10\r\nRCPT TO:<@x,@y:u@z>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO a\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nBDAT 3 LAST\r\nabcQUIT\r\n",
		"EHLO a\r\nAUTH PLAIN\r\nAGEAYg==\r\nAUTH LOGIN YQ==\r\nYg==\r\n",
		"EHLO a\r\nMAIL FROM:<\"q\\\"x\"@b> BODY=8BITMIME RET=HDRS ENVID=x+2B\r\nRCPT TO:<u@[127.0.0.1]> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;u@b\r\nDATA\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<u@c>\r\nDATA\r\na\n.\nb\r\n..\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<u@c>\r\nBDAT 99999999999999999999\r\n",
		"STARTTLS\r\nVRFY x\r\nEXPN y\r\nHELP\r\nRSET\r\nNOOP\r\n\r\n \r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<u@c>\r\nBDAT +5 LAST\r\nhello",
		"EHLO a\r\nAUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\nAUTH PLAIN YWxpY2UAYWxpY2UAc2VjcmV0\r\n", // authzid bob, then alice, for alice
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h := &panicCatcher{}
		srv := &Server{
			Hostname: "mx.test", Backend: &recBackend{}, Logger: slog.New(h),
			EnableAuth: true, AllowInsecureAuth: true,
			MaxMessageSize: 4096, CommandTimeout: 2 * time.Second, DataTimeout: 2 * time.Second,
		}
		cs, ss := net.Pipe()
		done := make(chan struct{})
		go func() { srv.ServeConn(ss); close(done) }()
		go io.Copy(io.Discard, cs)
		cs.SetWriteDeadline(time.Now().Add(2 * time.Second))
		cs.Write(in)
		cs.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("session hung on input %q", in)
		}
		if len(h.panics) > 0 {
			t.Fatalf("panic on input %q:\n%s", in, h.panics[0])
		}
	})
}
