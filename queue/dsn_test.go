package queue

import (
	"bufio"
	"bytes"
	"context"
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

// parsedDSN is a DSN taken apart with Go's MIME packages.
type parsedDSN struct {
	header     mail.Header
	human      string
	statusType string
	perMessage textproto.MIMEHeader
	perRcpt    []textproto.MIMEHeader
	returnType string
	returned   string
}

func parseDSN(t *testing.T, raw []byte) parsedDSN {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("DSN is no RFC 5322 message: %v\n%s", err, raw)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q (%v)", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var d parsedDSN
	d.header = msg.Header
	for i := 0; ; i++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			if i != 3 {
				t.Fatalf("DSN has %d parts, want 3", i)
			}
			return d
		}
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		body, _ := io.ReadAll(p)
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		switch i {
		case 0:
			d.human = string(body)
		case 1:
			d.statusType = ct
			tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
			if d.perMessage, err = tp.ReadMIMEHeader(); err != nil {
				t.Fatalf("per-message fields: %v", err)
			}
			for {
				h, err := tp.ReadMIMEHeader()
				if len(h) > 0 {
					d.perRcpt = append(d.perRcpt, h)
				}
				if err != nil {
					break
				}
			}
		case 2:
			d.returnType, d.returned = ct, string(body)
		}
	}
}

// dsns returns the DSNs in the sender's local mailbox.
func (h *harness) dsns(user string) [][]byte {
	h.t.Helper()
	entries, err := h.sp.Mailbox(user)
	if err != nil {
		h.t.Fatal(err)
	}
	var out [][]byte
	for _, e := range entries {
		b, err := h.sp.MailboxMessage(user, e.Seq)
		if err != nil {
			h.t.Fatal(err)
		}
		// Drop the Return-Path and Delivered-To lines of local delivery.
		if !bytes.HasPrefix(b, []byte("Return-Path: <>\r\n")) {
			h.t.Fatalf("mailbox entry not from <>: %q", b[:min(len(b), 80)])
		}
		out = append(out, b[bytes.Index(b, []byte("\r\nFrom: "))+2:])
	}
	return out
}

func (h *harness) enqueueWith(from, mailParams string, rcpts ...spool.Recipient) string {
	h.t.Helper()
	id, err := h.sp.Enqueue(context.Background(), spool.Envelope{From: from, MailParams: mailParams}, rcpts,
		[]byte("Subject: original subject\r\nMessage-ID: <orig@x.test>\r\n\r\nthe original body\r\n"))
	if err != nil {
		h.t.Fatal(err)
	}
	h.q.Notify()
	return id
}

// drain waits for n outcomes.
func (h *harness) drain(n int) []result {
	var rs []result
	for i := 0; i < n; i++ {
		rs = append(rs, h.next())
	}
	return rs
}

func TestFailureDSN(t *testing.T) {
	h := newHarness(t, func(to string, _ int) Reply {
		if strings.Contains(to, "nobody") {
			return Reply{Code: 550, Text: "550 5.1.1 <nobody@c.test>: Recipient address rejected"}
		}
		return Reply{Code: 250, Text: "250 2.0.0 OK"}
	}, policy)
	h.enqueueWith("<sender@local.test>", " ENVID=env+2B42",
		spool.Recipient{To: "<nobody@c.test>", Params: " ORCPT=rfc822;orig-nobody@c.test"},
		spool.Recipient{To: "<fine@c.test>"})
	h.drain(3) // two outcomes, then the DSN's local delivery
	dsns := h.dsns("sender")
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs, want 1", len(dsns))
	}
	d := parseDSN(t, dsns[0])
	if d.header.Get("To") != "<sender@local.test>" || !strings.HasPrefix(d.header.Get("From"), "Mail Delivery System <MAILER-DAEMON@") ||
		d.header.Get("Auto-Submitted") != "auto-replied" || !strings.Contains(d.header.Get("Subject"), "Undelivered") {
		t.Errorf("headers = %v", d.header)
	}
	if d.statusType != "message/delivery-status" || d.perMessage.Get("Reporting-Mta") != "dns; localhost" ||
		d.perMessage.Get("Original-Envelope-Id") != "env+42" || d.perMessage.Get("Arrival-Date") == "" {
		t.Errorf("per-message fields = %v (type %s)", d.perMessage, d.statusType)
	}
	if len(d.perRcpt) != 1 {
		t.Fatalf("%d recipient blocks, want 1 (the delivered one is not reported)", len(d.perRcpt))
	}
	r := d.perRcpt[0]
	for field, want := range map[string]string{
		"Final-Recipient":    "rfc822; nobody@c.test",
		"Original-Recipient": "rfc822; orig-nobody@c.test",
		"Action":             "failed",
		"Status":             "5.1.1",
		"Remote-Mta":         "dns; c.test",
		"Diagnostic-Code":    "smtp; 550 5.1.1 <nobody@c.test>: Recipient address rejected",
	} {
		if got := r.Get(field); got != want {
			t.Errorf("%s = %q, want %q", field, got, want)
		}
	}
	if r.Get("Last-Attempt-Date") == "" {
		t.Error("no Last-Attempt-Date")
	}
	if d.returnType != "text/rfc822-headers" || !strings.Contains(d.returned, "Subject: original subject") || strings.Contains(d.returned, "the original body") {
		t.Errorf("returned %s: %q", d.returnType, d.returned)
	}
	if !strings.Contains(d.human, "nobody@c.test") {
		t.Errorf("human part does not name the recipient: %q", d.human)
	}
}

func TestRetFullReturnsWholeMessage(t *testing.T) {
	h := newHarness(t, func(string, int) Reply { return Reply{Code: 550, Text: "550 5.7.1 refused"} }, policy)
	h.enqueueWith("<sender@local.test>", " RET=FULL", spool.Recipient{To: "<u@c.test>"})
	h.drain(2)
	d := parseDSN(t, h.dsns("sender")[0])
	if d.returnType != "message/rfc822" || !strings.Contains(d.returned, "the original body") {
		t.Errorf("returned %s: %q", d.returnType, d.returned)
	}
}

func TestNotifyNeverAndNullSender(t *testing.T) {
	h := newHarness(t, func(string, int) Reply { return Reply{Code: 550, Text: "550 5.1.1 no"} }, policy)
	h.enqueueWith("<sender@local.test>", "", spool.Recipient{To: "<u@c.test>", Params: " NOTIFY=NEVER"})
	h.enqueueWith("<>", "", spool.Recipient{To: "<v@c.test>"})
	h.drain(2)
	select {
	case r := <-h.results:
		t.Fatalf("unexpected outcome %+v (a DSN?)", r)
	case <-time.After(300 * time.Millisecond):
	}
	if n := len(h.dsns("sender")); n != 0 {
		t.Fatalf("%d DSNs with NOTIFY=NEVER", n)
	}
}

func TestSuccessNoticeForLocalDelivery(t *testing.T) {
	h := newHarness(t, ok, policy)
	h.enqueueWith("<sender@local.test>", " ENVID=E1",
		spool.Recipient{To: "<alice@local.test>", Params: " NOTIFY=SUCCESS ORCPT=rfc822;alice@old.test"})
	h.drain(2)
	dsns := h.dsns("sender")
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs, want 1", len(dsns))
	}
	d := parseDSN(t, dsns[0])
	r := d.perRcpt[0]
	if r.Get("Action") != "delivered" || r.Get("Status") != "2.0.0" || r.Get("Original-Recipient") != "rfc822; alice@old.test" ||
		d.perMessage.Get("Original-Envelope-Id") != "E1" {
		t.Errorf("success notice: %v / %v", d.perMessage, r)
	}
}

func TestRelayedNoticeWhenNextHopLacksDSN(t *testing.T) {
	h := newHarness(t, func(string, int) Reply { return Reply{Code: 250, Text: "250 2.0.0 OK", Relayed: true} }, policy)
	h.enqueueWith("<sender@local.test>", "", spool.Recipient{To: "<u@c.test>", Params: " NOTIFY=SUCCESS,FAILURE"})
	h.drain(2)
	if d := parseDSN(t, h.dsns("sender")[0]); d.perRcpt[0].Get("Action") != "relayed" {
		t.Errorf("action %q, want relayed", d.perRcpt[0].Get("Action"))
	}
}

// TestDelayThenExpiry: a next hop down longer than the lifetime gives one
// delay DSN at delay_warning, one failure DSN at expiry, nothing else.
func TestDelayThenExpiry(t *testing.T) {
	h := newHarness(t, func(string, int) Reply { return Reply{Code: 421, Text: "421 4.4.2 down"} }, policy)
	h.stop()
	pol := RetryPolicy{Min: time.Hour, Max: 4 * time.Hour, Lifetime: 24 * time.Hour}
	h.startWith(pol, func(o *Options) { o.DelayWarning = 4 * time.Hour })
	h.enqueueWith("<sender@local.test>", "", spool.Recipient{To: "<u@c.test>"})
	delays, fails := 0, 0
	for step := 0; step < 200; step++ {
		select {
		case r := <-h.results:
			if r.status == spool.StatusFailed {
				fails++
			}
		case <-time.After(30 * time.Millisecond):
			h.advance(30 * time.Minute)
		}
		if fails > 0 {
			break
		}
	}
	// The two DSNs are delivered locally; nothing more may come.
	deadline := time.Now().Add(5 * time.Second)
	for len(h.dsns("sender")) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	for _, raw := range h.dsns("sender") {
		d := parseDSN(t, raw)
		switch a := d.perRcpt[0].Get("Action"); a {
		case "delayed":
			delays++
			if d.perRcpt[0].Get("Will-Retry-Until") == "" || !strings.HasPrefix(d.perRcpt[0].Get("Status"), "4.") {
				t.Errorf("delay DSN fields %v", d.perRcpt[0])
			}
		case "failed":
			if d.perRcpt[0].Get("Status") != "5.4.7" {
				t.Errorf("expiry status %q, want 5.4.7", d.perRcpt[0].Get("Status"))
			}
		default:
			t.Errorf("unexpected action %q", a)
		}
	}
	if delays != 1 || fails != 1 || len(h.dsns("sender")) != 2 {
		t.Fatalf("delay DSNs %d, failures %d, DSNs %d; want 1, 1, 2", delays, fails, len(h.dsns("sender")))
	}
}

// TestBounceToUndeliverableSender: the DSN itself fails; no second bounce.
func TestBounceToUndeliverableSender(t *testing.T) {
	h := newHarness(t, func(string, int) Reply { return Reply{Code: 550, Text: "550 5.1.1 no"} }, policy)
	h.enqueueWith("<ghost@nxdomain.test>", "", spool.Recipient{To: "<u@c.test>"})
	rs := h.drain(2) // the failure, then the DSN's own failure
	if rs[1].status != spool.StatusFailed {
		t.Fatalf("DSN outcome %+v", rs[1])
	}
	select {
	case r := <-h.results:
		t.Fatalf("a third outcome: %+v (a bounce of the bounce?)", r)
	case <-time.After(300 * time.Millisecond):
	}
	if q := queued(t, h.sp); q != 0 {
		t.Fatalf("%d messages left in the queue", q)
	}
}

func queued(t *testing.T, sp *spool.Spool) int {
	n := 0
	if err := sp.List(func(*spool.Message) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestUTF8DSNUsesGlobalForms: a UTF-8 recipient is reported in the
// message/global-delivery-status form of RFC 6533, the original headers as
// message/global-headers.
func TestUTF8DSNUsesGlobalForms(t *testing.T) {
	h := newHarness(t, func(string, int) Reply { return Reply{Code: 550, Text: "550 5.1.1 no"} }, policy)
	h.enqueueWith("<sender@local.test>", " SMTPUTF8", spool.Recipient{To: "<jörg@c.test>"})
	h.drain(2)
	raw := h.dsns("sender")
	if len(raw) != 1 {
		t.Fatalf("%d DSNs", len(raw))
	}
	d := parseDSN(t, raw[0])
	if d.statusType != "message/global-delivery-status" || d.returnType != "message/global-headers" ||
		d.perRcpt[0].Get("Final-Recipient") != "utf-8; jörg@c.test" {
		t.Errorf("status %s, returned %s, final %q", d.statusType, d.returnType, d.perRcpt[0].Get("Final-Recipient"))
	}
}

// TestRequireTLSDSN: the report on a REQUIRETLS message returns headers
// only, even with RET=FULL, and is itself sent with REQUIRETLS
// (RFC 8689 §5).
func TestRequireTLSDSN(t *testing.T) {
	q := New(Options{Hostname: "relay.test", Retry: policy})
	m := &spool.Message{ID: "001ABCDEFGHJK", Envelope: spool.Envelope{From: "<s@a.test>", MailParams: " RET=FULL REQUIRETLS"},
		Recipients: []spool.Recipient{{To: "<u@c.test>"}}}
	raw, params := q.composeDSN(m, []dsnRcpt{{final: "<u@c.test>", action: "failed", status: "5.7.30", reply: "550 5.7.30 REQUIRETLS not offered"}},
		[]byte("Subject: secret\r\n\r\nthe secret body\r\n"), time.Unix(2e9, 0))
	if !strings.Contains(params, "REQUIRETLS") {
		t.Errorf("DSN MAIL params %q lack REQUIRETLS", params)
	}
	d := parseDSN(t, raw)
	if d.returnType != "text/rfc822-headers" || strings.Contains(d.returned, "secret body") {
		t.Errorf("returned %s: %q", d.returnType, d.returned)
	}
}
