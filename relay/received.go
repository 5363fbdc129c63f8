package relay

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// receivedHeader formats the trace header of RFC 5321 §4.4 that this relay
// prepends to every message it accepts:
//
//	Received: from HELO ([IP])
//		by HOSTNAME (relay) with ESMTPSA id ID
//		for <RCPT>; DATE
//
// "for" names the recipient only when there is exactly one, as Postfix does,
// so that a message to many does not reveal them all. Every value that comes
// from the client is cleaned of anything that could end or fold the header.
func receivedHeader(helo, ip, hostname, with, id, forRcpt string, at time.Time) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n\tby %s (relay) with %s id %s",
		headerSafe(helo), headerSafe(ip), headerSafe(hostname), with, id)
	if forRcpt != "" {
		fmt.Fprintf(&b, "\r\n\tfor %s", headerSafe(forRcpt))
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", at.Format(time.RFC1123Z))
	return b.Bytes()
}

// withProtocol is the "with" keyword of RFC 3848: ESMTP, plus S for TLS
// and A for an authenticated client; SMTP for HELO, UTF8 variants for
// SMTPUTF8 (RFC 6531 §3.7.3).
func withProtocol(esmtp, tls, auth, utf8 bool) string {
	if !esmtp {
		return "SMTP"
	}
	p := "ESMTP"
	if utf8 {
		p = "UTF8SMTP"
	}
	if tls {
		p += "S"
	}
	if auth {
		p += "A"
	}
	return p
}

// headerSafe keeps a client-supplied value on one header line: control
// characters become '?', and parentheses and ';' that would change the
// structure of the trace fields are replaced too.
func headerSafe(s string) string {
	if s == "" {
		return "unknown"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '(' || r == ')' || r == ';' {
			return '?'
		}
		return r
	}, s)
}

// countReceived counts the Received header fields in the header section of
// msg, for the hop limit (RFC 5321 §6.3).
func countReceived(msg []byte) int {
	n := 0
	for len(msg) > 0 {
		i := bytes.IndexByte(msg, '\n')
		line := msg
		if i >= 0 {
			line, msg = msg[:i+1], msg[i+1:]
		} else {
			msg = nil
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break // end of the header section
		}
		if len(line) >= 9 && bytes.EqualFold(line[:9], []byte("received:")) {
			n++
		}
	}
	return n
}
