package integration

import (
	"bytes"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// sendDSN submits a message with DSN parameters.
func sendDSN(t *testing.T, addr, from, to string, mo *smtp.MailOptions, ro *smtp.RcptOptions) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from, mo); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(to, ro); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: dsn test\r\nMessage-ID: <dsn-test@a.test>\r\n\r\nbody\r\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()
}

// mailboxRaw returns the raw messages in user's mailbox at n.
func (n *node) mailboxRaw(user string) [][]byte {
	n.t.Helper()
	sp := n.r.Spool()
	entries, err := sp.Mailbox(user)
	if err != nil {
		n.t.Fatal(err)
	}
	var out [][]byte
	for _, e := range entries {
		b, err := sp.MailboxMessage(user, e.Seq)
		if err != nil {
			n.t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// statusFields returns the per-message and first per-recipient fields of
// a DSN's delivery-status part, and the returned content.
func statusFields(t *testing.T, raw []byte) (perMsg, perRcpt mail.Header, returned string) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	mr.NextPart()
	p, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	status, _ := mail.ReadMessage(p) // per-message fields, then the rest
	perMsg = status.Header
	rest, err := mail.ReadMessage(status.Body)
	if err != nil {
		t.Fatalf("no per-recipient block: %v", err)
	}
	p3, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.ReadFrom(p3)
	return perMsg, rest.Header, b.String()
}

// pythonCheckDSN parses the DSN with Python's email package, an
// independent MIME parser, and prints the fields it finds.
func pythonCheckDSN(t *testing.T, raw []byte) string {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed; skipping the independent DSN parse")
	}
	f := filepath.Join(t.TempDir(), "dsn.eml")
	if err := os.WriteFile(f, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	script := `
import email, sys
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=policy.compat32)
assert m.get_content_type() == "multipart/report", m.get_content_type()
assert m.get_param("report-type") == "delivery-status"
parts = m.get_payload()
assert len(parts) == 3, len(parts)
assert parts[0].get_content_type() == "text/plain"
ds = parts[1]
assert ds.get_content_type() == "message/delivery-status", ds.get_content_type()
blocks = ds.get_payload()
print("reporting-mta=" + blocks[0]["Reporting-MTA"])
for b in blocks[1:]:
    for k in ("Final-Recipient", "Original-Recipient", "Action", "Status", "Diagnostic-Code"):
        if b[k] is not None:
            print(k.lower() + "=" + " ".join(b[k].split()))
print("returned=" + parts[2].get_content_type())
`
	out, err := exec.Command("python3", "-c", script, f).CombinedOutput()
	if err != nil {
		t.Fatalf("Python's email package rejects the DSN: %v\n%s", err, out)
	}
	return string(out)
}

// TestBounceFromNextHop: B refuses nobody@b.test with 550 5.1.1; the
// sender at A gets exactly one DSN naming the recipient, the status and
// B's reply, with the original headers attached.
func TestBounceFromNextHop(t *testing.T) {
	a, b := newNode(t, "a", "127.0.0.91"), newNode(t, "b", "127.0.0.92")
	b.start()
	a.route("b.test", b.addr)
	a.start()
	sendDSN(t, a.addr, "alice@a.test", "nobody@b.test", nil, nil)
	waitFor(t, 20*time.Second, "a DSN in alice's mailbox at A", func() bool { return len(a.mailboxRaw("alice")) >= 1 })
	time.Sleep(300 * time.Millisecond)
	boxes := a.mailboxRaw("alice")
	if len(boxes) != 1 {
		t.Fatalf("%d messages for the sender, want one DSN", len(boxes))
	}
	raw := boxes[0]
	raw = raw[bytes.Index(raw, []byte("\r\nFrom: "))+2:] // after Return-Path and Delivered-To
	perMsg, perRcpt, returned := statusFields(t, raw)
	if got := perMsg.Get("Reporting-Mta"); got != "dns; a.test" {
		t.Errorf("Reporting-MTA = %q", got)
	}
	want := map[string]string{
		"Final-Recipient": "rfc822; nobody@b.test",
		"Action":          "failed",
		"Status":          "5.1.1",
		"Diagnostic-Code": "smtp; 550 5.1.1 No such user here",
	}
	for k, v := range want {
		if got := perRcpt.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if !strings.HasPrefix(perRcpt.Get("Remote-Mta"), "dns; 127.0.0.92") {
		t.Errorf("Remote-MTA = %q", perRcpt.Get("Remote-Mta"))
	}
	if !strings.Contains(returned, "Subject: dsn test") || !strings.Contains(returned, "Message-ID: <dsn-test@a.test>") {
		t.Errorf("original headers not attached: %q", returned)
	}
	py := pythonCheckDSN(t, raw)
	for _, line := range []string{"reporting-mta=dns; a.test", "final-recipient=rfc822; nobody@b.test", "action=failed",
		"status=5.1.1", "diagnostic-code=smtp; 550 5.1.1 No such user here", "returned=text/rfc822-headers"} {
		if !strings.Contains(py, line+"\n") {
			t.Errorf("Python's parse lacks %q:\n%s", line, py)
		}
	}
}

// TestSuccessNoticeFromFinalRelay: NOTIFY=SUCCESS gives one delivery
// notice, from the relay that delivered; ENVID and ORCPT travel with the
// message and appear in it.
func TestSuccessNoticeFromFinalRelay(t *testing.T) {
	a, b := newNode(t, "a", "127.0.0.93"), newNode(t, "b", "127.0.0.94")
	b.route("a.test", a.addr)
	b.start()
	a.route("b.test", b.addr)
	a.start()
	sendDSN(t, a.addr, "alice@a.test", "bob@b.test",
		&smtp.MailOptions{EnvelopeID: "ENV-42"},
		&smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifySuccess}, OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "bob@old.test"})
	waitFor(t, 20*time.Second, "the message at B and a notice at A", func() bool {
		return len(b.mailboxRaw("bob")) == 1 && len(a.mailboxRaw("alice")) >= 1
	})
	time.Sleep(300 * time.Millisecond)
	notices := a.mailboxRaw("alice")
	if len(notices) != 1 {
		t.Fatalf("%d notices, want 1 (none from A, which passed the message to a DSN-capable hop)", len(notices))
	}
	raw := notices[0][bytes.Index(notices[0], []byte("\r\nFrom: "))+2:]
	perMsg, perRcpt, _ := statusFields(t, raw)
	if perMsg.Get("Reporting-Mta") != "dns; b.test" || perMsg.Get("Original-Envelope-Id") != "ENV-42" ||
		perRcpt.Get("Action") != "delivered" || perRcpt.Get("Original-Recipient") != "rfc822; bob@old.test" ||
		perRcpt.Get("Final-Recipient") != "rfc822; bob@b.test" {
		t.Errorf("notice fields: %v / %v", perMsg, perRcpt)
	}
	py := pythonCheckDSN(t, raw)
	if !strings.Contains(py, "action=delivered\n") || !strings.Contains(py, "original-recipient=rfc822; bob@old.test\n") {
		t.Errorf("Python's parse:\n%s", py)
	}
	// NOTIFY=NEVER: no notice at all, even on failure.
	sendDSN(t, a.addr, "alice@a.test", "nobody@b.test", nil, &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyNever}})
	time.Sleep(time.Second)
	if n := len(a.mailboxRaw("alice")); n != 1 {
		t.Errorf("NOTIFY=NEVER still produced a DSN (%d messages)", n)
	}
}
