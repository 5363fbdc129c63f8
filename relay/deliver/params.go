package deliver

import (
	"fmt"
	"strings"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/spool"
)

// storedParams parses the MAIL parameters stored with msg.
func storedParams(msg *spool.Message) (envelope.MailParams, error) {
	from := msg.From
	if len(from) < 2 || from[0] != '<' || from[len(from)-1] != '>' {
		return envelope.MailParams{}, fmt.Errorf("stored reverse path %q is not in wire form", from)
	}
	p, err := envelope.ParseMailParams(strings.TrimSpace(msg.MailParams))
	if err != nil {
		return envelope.MailParams{}, fmt.Errorf("stored MAIL parameters: %w", err)
	}
	return p, nil
}

// cannotCarry is the reply for every recipient when this hop cannot carry
// a message with parameters p at all, nil when it can.
func (s *clientSession) cannotCarry(p envelope.MailParams) *queue.Reply {
	if p.RequireTLS {
		// RFC 8689 §4.2.1: only over verified TLS to a hop that promises
		// to keep the requirement; otherwise the message must not go on
		// and is returned (§4.2.2, 5.7.30), never sent in the clear.
		var why string
		switch {
		case s.tls == nil:
			why = "no TLS session"
		case !s.verified:
			why = "its TLS certificate did not verify"
		case !s.ext("REQUIRETLS"):
			why = "it does not offer REQUIRETLS"
		}
		if why != "" {
			return &queue.Reply{Code: 550, Text: fmt.Sprintf("550 5.7.30 REQUIRETLS support required: %s cannot carry the message (%s)", s.remote, why)}
		}
	}
	if p.SMTPUTF8 && !s.ext("SMTPUTF8") {
		// RFC 6531 §3.2: such a message cannot be relayed to this hop.
		return &queue.Reply{Code: 553, Text: fmt.Sprintf("553 5.6.7 SMTPUTF8 is required, but was not offered by %s", s.remote)}
	}
	return nil
}

// mailParams are the MAIL parameters this hop gets for a message stored
// with p, whose body (with our hand-off field) is size bytes: each only
// where the hop offers its extension. AUTH= is not passed on: it asserted
// the sender's identity to this relay (RFC 4954 §5), and the next hop has
// no reason to trust it. MT-PRIORITY and BY follow levelParams.
func (s *clientSession) mailParams(p envelope.MailParams, l levels, size int64) (out envelope.MailParams, refuse *queue.Reply, relayed bool) {
	if s.ext("SIZE") {
		out.Size = size
	}
	if p.Body == envelope.Body8BitMIME && s.ext("8BITMIME") {
		out.Body = p.Body
	}
	out.SMTPUTF8 = p.SMTPUTF8
	out.RequireTLS = p.RequireTLS
	if s.ext("DSN") {
		out.Ret, out.EnvID = p.Ret, p.EnvID
	}
	out, refuse, relayed = s.levelParams(out, l)
	return out, refuse, relayed
}

// rcptLine is the RCPT command for a stored forward path in wire form,
// optionally followed by its parameters ("<u@d> NOTIFY=FAILURE
// ORCPT=rfc822;u@d"). The path keeps its source route; the DSN
// parameters go only to a hop that offers DSN.
func (s *clientSession) rcptLine(rcpt string) (string, error) {
	path, params, err := envelope.SplitArg(rcpt)
	if err != nil {
		return "", fmt.Errorf("recipient %q: %w", rcpt, err)
	}
	if len(path) <= 2 || path[0] != '<' || path[len(path)-1] != '>' {
		return "", fmt.Errorf("recipient %q: not a forward path", rcpt)
	}
	p, err := envelope.ParseRcptParams(params)
	if err != nil {
		return "", fmt.Errorf("recipient %q: %w", rcpt, err)
	}
	line := "RCPT TO:" + path
	if s.ext("DSN") {
		line += p.String()
	}
	if !oneCommandLine(line) {
		return "", fmt.Errorf("recipient %q: not one command line", rcpt)
	}
	return line, nil
}

// oneCommandLine reports whether line can be sent as one command: no
// control characters, which would end it early or smuggle another.
func oneCommandLine(line string) bool {
	for i := 0; i < len(line); i++ {
		if line[i] < ' ' || line[i] == 0x7f {
			return false
		}
	}
	return true
}

// oneLine joins the lines of a multi-line reply with spaces and replaces
// control characters: reply text goes into DSNs and the event log, where a
// line break from a remote server must not start a new field.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n':
			return ' '
		case r < ' ' || r == 0x7f:
			return '?'
		}
		return r
	}, strings.TrimSpace(s))
}
