package queue

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/spool"
)

// DefaultDSNMaxFull bounds the original message returned whole in a DSN
// (RET=FULL); a larger one is returned as headers only, as RFC 3461 §4.3
// allows.
const DefaultDSNMaxFull = 1 << 20

// RemoteExpanded is the Remote of a recipient's result when it was an
// alias expanded at acceptance (spool.Recipient.Expanded).
const RemoteExpanded = "expanded"

// dsnRcpt is one per-recipient block of a delivery status report.
type dsnRcpt struct {
	final     string // Final-Recipient address
	origType  string // ORCPT address type, "" when none was given
	orig      string
	action    string // failed | delayed | delivered | relayed | expanded
	status    string // x.y.z
	remote    string // Remote-MTA host, "" when no server answered
	reply     string // Diagnostic-Code text
	retryTill time.Time
}

// dsnFor decides which of the outcomes owe the sender a notice (RFC 3461
// §6.2) and composes one DSN for all of them: a failure unless NOTIFY
// excludes it, one delay warning per recipient after DelayWarning, and a
// success notice only when NOTIFY=SUCCESS was asked for and this relay is
// the last that can give one (local delivery, or a next hop without DSN).
// It marks delay-warned results. A message from the null reverse path
// never causes a DSN: that is what stops bounce loops.
func (q *Queue) dsnFor(m *spool.Message, results []spool.Result, relayed map[int]bool, now time.Time) *spool.Outgoing {
	var rcpts []dsnRcpt
	var forIdx []int
	for i := range results {
		res := &results[i]
		r := m.Recipients[res.Rcpt]
		params, _ := envelope.ParseRcptParams(strings.TrimSpace(r.Params))
		wants := func(f envelope.Notify) bool {
			if params.Notify == 0 { // RFC 3461 leaves the default to us: failures and delays
				return f == envelope.NotifyFailure || f == envelope.NotifyDelay
			}
			return params.Notify&envelope.NotifyNever == 0 && params.Notify&f != 0
		}
		d := dsnRcpt{final: r.To, origType: strings.ToLower(params.ORcptType), orig: params.ORcpt, reply: res.Reply, remote: remoteHost(res.Remote)}
		switch res.Status {
		case spool.StatusFailed:
			if !wants(envelope.NotifyFailure) {
				continue
			}
			d.action, d.status = "failed", statusOf(res.Reply, "5.0.0")
		case spool.StatusDeferred:
			// A BY=…;N deadline asks for the delay notice itself (RFC
			// 2852 §4.2), whatever NOTIFY says short of NEVER. Either
			// way a recipient gets one delay DSN at most.
			byDue := byNotifyDue(m, now) && params.Notify&envelope.NotifyNever == 0
			warnDue := q.o.DelayWarning > 0 && now.Sub(m.Received) >= q.o.DelayWarning && wants(envelope.NotifyDelay)
			if r.DelayWarned || !byDue && !warnDue {
				continue
			}
			res.DelayWarned = true
			d.action, d.status = "delayed", statusOf(res.Reply, "4.0.0")
			if byDue {
				d.status = "4.4.7" // delivery time expired, still trying
			}
			if q.o.Retry.Lifetime > 0 {
				d.retryTill = m.Received.Add(q.o.Retry.Lifetime)
			}
		case spool.StatusDelivered:
			if params.Notify&envelope.NotifySuccess == 0 {
				continue
			}
			switch {
			case res.Remote == "local":
				d.action, d.remote = "delivered", ""
			case res.Remote == RemoteExpanded:
				d.action, d.remote = "expanded", ""
			case relayed[res.Rcpt]:
				d.action = "relayed"
			default:
				continue // the next hop speaks DSN: the notice is its job now
			}
			d.status = statusOf(res.Reply, "2.0.0")
		default:
			continue
		}
		rcpts = append(rcpts, d)
		forIdx = append(forIdx, res.Rcpt)
	}
	if len(rcpts) == 0 {
		return nil
	}
	if m.From == "<>" {
		for _, d := range rcpts {
			if d.action == "failed" {
				// A bounce that bounced: log it, never answer it.
				q.log.Warn("double failure: undeliverable message from <> dropped, no DSN", "id", m.ID, "to", d.final, "reply", d.reply)
			}
		}
		return nil
	}
	body, err := q.original(m.ID)
	if err != nil {
		q.log.Error("queue: DSN: read original", "id", m.ID, "err", err)
		body = nil // the report itself matters more than the attachment
	}
	msg, mailParams := q.composeDSN(m, rcpts, body, now)
	if q.o.SignDSN != nil {
		if signed, err := q.o.SignDSN(msg); err == nil {
			msg = signed
		} else {
			q.log.Error("queue: DSN: sign", "id", m.ID, "err", err)
		}
	}
	to := []spool.Recipient{{To: m.From}}
	if q.o.DSNRecipients != nil {
		if alias := q.o.DSNRecipients(m.From); len(alias) > 0 {
			to = to[:0]
			for _, a := range alias {
				to = append(to, spool.Recipient{To: a})
			}
		}
	}
	return &spool.Outgoing{
		Envelope:   spool.Envelope{From: "<>", MailParams: mailParams, Received: now, Helo: q.o.Hostname},
		Recipients: to,
		Body:       msg,
		For:        forIdx,
		Action:     dsnAction(rcpts),
	}
}

// original reads what a DSN may return of message id: all of it when it
// is at most DSNMaxFull bytes, else its first DSNMaxFull+1 bytes, of
// which composeDSN takes the header section. Memory stays bounded
// whatever the size of the message.
func (q *Queue) original(id string) ([]byte, error) {
	b, err := q.o.Spool.OpenBody(id)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return io.ReadAll(io.LimitReader(b.NewReader(), int64(q.o.DSNMaxFull)+1))
}

// composeDSN renders the multipart/report of RFC 3464 and RFC 6522: a
// human-readable part, the machine-readable delivery-status part, and the
// original message (headers only unless RET=FULL and it is small enough).
// Addresses that need UTF-8 switch to the message/global-* forms of
// RFC 6533. It returns the message and the MAIL parameters it needs.
func (q *Queue) composeDSN(m *spool.Message, rcpts []dsnRcpt, original []byte, now time.Time) ([]byte, string) {
	mp, _ := envelope.ParseMailParams(strings.TrimSpace(m.MailParams))
	host := q.o.Hostname
	utf8 := nonASCII(m.From)
	for _, d := range rcpts {
		utf8 = utf8 || nonASCII(d.final) || nonASCII(d.orig)
	}
	kind := dsnAction(rcpts)
	subject := map[string]string{
		"failed":    "Undelivered Mail Returned to Sender",
		"delayed":   "Delayed Mail (still being retried)",
		"delivered": "Successful Mail Delivery Report",
		"relayed":   "Mail Relayed (no further delivery reports)",
		"expanded":  "Mail Delivered to an Alias (expanded)",
	}[kind]
	boundary := fmt.Sprintf("=_relay_%s_%d", m.ID, now.UnixNano())
	date := now.Format(time.RFC1123Z)
	sender := strings.Trim(m.From, "<>")
	if i := strings.LastIndex(sender, ":"); i >= 0 && strings.HasPrefix(sender, "@") {
		sender = sender[i+1:] // a source-routed reverse path: the mailbox
	}

	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\r\n", args...) }
	w("From: Mail Delivery System <MAILER-DAEMON@%s>", host)
	w("To: <%s>", sender)
	w("Subject: %s", subject)
	w("Date: %s", date)
	w("Message-ID: <%d.%s.dsn@%s>", now.UnixNano(), m.ID, host)
	w("Auto-Submitted: auto-replied") // RFC 3834: never answer this
	w("MIME-Version: 1.0")
	w("Content-Type: multipart/report; report-type=delivery-status;")
	w("\tboundary=\"%s\"", boundary)
	w("")
	w("This is a MIME-encapsulated delivery status report.")
	w("")

	// 1. For people.
	w("--%s", boundary)
	w("Content-Type: text/plain; charset=utf-8")
	w("Content-Description: Notification")
	w("Content-Transfer-Encoding: 8bit")
	w("")
	w("This is the mail relay at %s.", host)
	w("")
	switch kind {
	case "failed":
		w("Your message could not be delivered to one or more recipients, and")
		w("will not be retried. The reason for each is below. Check the address;")
		w("if it looks right, forward this report to your postmaster.")
	case "delayed":
		w("Your message has not been delivered yet to one or more recipients.")
		w("The relay keeps trying; you do not need to send it again. You will")
		w("be told if it finally fails.")
	default:
		w("Your message was delivered (or passed on to a system that gives no")
		w("further reports), as you asked to be told.")
	}
	w("")
	for _, d := range rcpts {
		line := fmt.Sprintf("<%s>: %s", mailboxOf(d.final), d.action)
		if d.reply != "" {
			line += ": " + fieldSafe(d.reply)
		}
		if d.remote != "" {
			line += " (at " + d.remote + ")"
		}
		if !d.retryTill.IsZero() {
			line += "; retrying until " + d.retryTill.Format(time.RFC1123Z)
		}
		w("  %s", line)
	}
	w("")

	// 2. For programs (RFC 3464 §2).
	w("--%s", boundary)
	if utf8 {
		w("Content-Type: message/global-delivery-status")
	} else {
		w("Content-Type: message/delivery-status")
	}
	w("Content-Description: Delivery report")
	w("")
	w("Reporting-MTA: dns; %s", host)
	if mp.EnvID != "" {
		w("Original-Envelope-Id: %s", fieldSafe(mp.EnvID))
	}
	w("Arrival-Date: %s", m.Received.Format(time.RFC1123Z))
	for _, d := range rcpts {
		w("")
		w("Final-Recipient: %s; %s", addrType(mailboxOf(d.final)), mailboxOf(d.final))
		if d.origType != "" {
			w("Original-Recipient: %s; %s", fieldSafe(d.origType), fieldSafe(d.orig))
		}
		w("Action: %s", d.action)
		w("Status: %s", d.status)
		if d.remote != "" {
			w("Remote-MTA: dns; %s", fieldSafe(d.remote))
		}
		if diag := strings.TrimSpace(truncate(fieldSafe(d.reply), 900)); diag != "" && (d.remote != "" || d.action == "failed" || d.action == "delayed") {
			w("Diagnostic-Code: smtp; %s", diag)
		}
		w("Last-Attempt-Date: %s", date)
		if !d.retryTill.IsZero() {
			w("Will-Retry-Until: %s", d.retryTill.Format(time.RFC1123Z))
		}
	}
	w("")

	// 3. The original (RFC 3461 §4.3: RET=HDRS by default).
	// RFC 8689 §5: the report on a REQUIRETLS message carries its headers
	// only, whatever RET says, and travels with REQUIRETLS itself.
	full := mp.Ret == envelope.RetFull && !mp.RequireTLS && original != nil && len(original) <= q.o.DSNMaxFull
	w("--%s", boundary)
	switch {
	case full && utf8:
		w("Content-Type: message/global")
	case full:
		w("Content-Type: message/rfc822")
	case utf8:
		w("Content-Type: message/global-headers")
	default:
		w("Content-Type: text/rfc822-headers")
	}
	if full {
		w("Content-Description: Undelivered Message")
	} else {
		w("Content-Description: Undelivered Message Headers")
	}
	w("")
	part := headerSection(original)
	if full {
		part = original
	}
	b.Write(part)
	if len(part) > 0 && !bytes.HasSuffix(part, []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	w("")
	w("--%s--", boundary)

	var params []string
	if utf8 {
		params = append(params, "SMTPUTF8")
	}
	if mp.RequireTLS {
		params = append(params, "REQUIRETLS")
	}
	if has8bit(b.Bytes()) {
		params = append(params, "BODY=8BITMIME")
	}
	mailParams := ""
	if len(params) > 0 {
		mailParams = " " + strings.Join(params, " ")
	}
	return b.Bytes(), mailParams
}

// dsnAction is what a DSN reports as a whole: a failure if any
// recipient failed, else the action of its first recipient.
func dsnAction(rcpts []dsnRcpt) string {
	for _, d := range rcpts {
		if d.action == "failed" {
			return "failed"
		}
	}
	return rcpts[0].action
}

// statusOf takes the enhanced status code (RFC 3463) from a reply such as
// "550 5.1.1 no such user", or def when the reply has none.
func statusOf(reply, def string) string {
	f := strings.Fields(reply)
	if len(f) >= 2 && len(f[0]) == 3 {
		p := strings.Split(f[1], ".")
		if len(p) == 3 && len(p[0]) == 1 && p[0][0] == def[0] && allDigits(p[1]) && allDigits(p[2]) {
			return f[1]
		}
	}
	return def
}

func allDigits(s string) bool {
	if s == "" || len(s) > 3 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// mailboxOf turns a stored forward path ("<@a:u@d>") into the mailbox
// the report names ("u@d").
func mailboxOf(path string) string {
	p, err := envelope.ParseForwardPath(path, true)
	if err != nil {
		return fieldSafe(strings.Trim(path, "<>"))
	}
	if p.IsPostmaster() {
		return p.Local
	}
	return p.Mailbox()
}

// addrType is the address type of RFC 3464 §2.3.2 (RFC 6533 for UTF-8).
func addrType(addr string) string {
	if nonASCII(addr) {
		return "utf-8"
	}
	return "rfc822"
}

func remoteHost(remote string) string {
	if remote == "" || remote == "local" {
		return ""
	}
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// headerSection returns msg up to and including the blank line that ends
// its header section.
func headerSection(msg []byte) []byte {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+2]
	}
	return msg
}

func nonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return true
		}
	}
	return false
}

func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// fieldSafe makes a value fit one line of a DSN field: a remote server's
// reply, or a stored value, may hold any byte, and a control character
// would break the report (or forge a field of its own).
func fieldSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, oneLine(s))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
