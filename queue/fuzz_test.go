package queue

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/spool"
)

// FuzzDSN composes DSNs from arbitrary replies, addresses and original
// messages and parses them back with Go's MIME packages: the report must
// always be a three-part multipart/report whose delivery-status fields
// survive the round trip, whatever the remote server said.
func FuzzDSN(f *testing.F) {
	f.Add("550 5.1.1 no such user", "<u@c.test>", " ORCPT=rfc822;x@y.test", " RET=FULL ENVID=abc", "Subject: hi\r\n\r\nbody\r\n")
	f.Add("451 4.4.1 connection refused\r\nBcc: x", "<@a.test:u@c.test>", "", "", "no header section at all")
	f.Add("", "<jörg@ü.test>", " NOTIFY=SUCCESS", " SMTPUTF8", "Subject: ü\r\n\r\n")
	f.Add("250 2.0.0 ok", "<postmaster>", "", " RET=HDRS", "\r\n\r\n\r\n")
	f.Fuzz(func(t *testing.T, reply, rcpt, rcptParams, mailParams, original string) {
		q := New(Options{Hostname: "relay.test", DSNMaxFull: 1 << 20, Retry: policy})
		m := &spool.Message{ID: "001ABCDEFGHJK", Envelope: spool.Envelope{From: "<s@a.test>", MailParams: mailParams, Received: time.Unix(1e9, 0)},
			Recipients: []spool.Recipient{{To: rcpt, Params: rcptParams}}}
		d := dsnRcpt{final: rcpt, action: "failed", status: statusOf(reply, "5.0.0"), reply: reply, remote: "127.0.0.3"}
		raw, _ := q.composeDSN(m, []dsnRcpt{d}, []byte(original), time.Unix(2e9, 0))
		msg, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("DSN is no message: %v\n%q", err, raw)
		}
		mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/report" {
			t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
		}
		mr := multipart.NewReader(msg.Body, params["boundary"])
		var parts [][]byte
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("part %d: %v\n%q", len(parts), err, raw)
			}
			b, _ := io.ReadAll(p)
			parts = append(parts, b)
		}
		if len(parts) != 3 {
			t.Fatalf("%d parts\n%q", len(parts), raw)
		}
		tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(parts[1])))
		if _, err := tp.ReadMIMEHeader(); err != nil {
			t.Fatalf("per-message fields: %v\n%q", err, parts[1])
		}
		h, err := tp.ReadMIMEHeader()
		if err != nil && err != io.EOF {
			t.Fatalf("per-recipient fields: %v\n%q", err, parts[1])
		}
		if h.Get("Action") != "failed" || h.Get("Status") != d.status {
			t.Fatalf("fields %v, want Action failed, Status %s", h, d.status)
		}
		if diag := h.Get("Diagnostic-Code"); strings.TrimSpace(fieldSafe(reply)) != "" && !strings.HasPrefix(diag, "smtp; ") {
			t.Fatalf("Diagnostic-Code %q", diag)
		}
	})
}
