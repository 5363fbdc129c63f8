package smtpd

import (
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-smtp"
)

// Reply is one SMTP reply: a code, an optional enhanced status code
// (RFC 3463) and text that may span several lines.
type Reply struct {
	Code     int
	Enhanced string // "5.5.1"; "" for none
	Text     string
}

// reply builds a Reply; the text is formatted with fmt.Sprintf.
func reply(code int, enh, format string, args ...any) Reply {
	return Reply{Code: code, Enhanced: enh, Text: fmt.Sprintf(format, args...)}
}

// errorReply turns a Backend error into a Reply: SMTP errors pass through
// unchanged, anything else is a local failure the client should retry.
func errorReply(err error) Reply {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return reply(451, "4.3.0", "Local error, try again later")
	}
	r := Reply{Code: se.Code, Text: se.Message}
	switch se.EnhancedCode {
	case smtp.NoEnhancedCode:
	case smtp.EnhancedCodeNotSet:
		r.Enhanced = fmt.Sprintf("%d.0.0", se.Code/100)
	default:
		e := se.EnhancedCode
		r.Enhanced = fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2])
	}
	if r.Code < 200 || r.Code > 599 {
		r = reply(451, "4.3.0", "Local error, try again later")
	}
	return r
}

// format renders the reply in wire form. CR and LF in the text only ever
// split lines, so a Backend's message cannot inject a reply of its own.
func (r Reply) format() string {
	text := strings.ReplaceAll(r.Text, "\r", "")
	lines := strings.Split(text, "\n")
	var b strings.Builder
	for i, l := range lines {
		sep := byte('-')
		if i == len(lines)-1 {
			sep = ' '
		}
		fmt.Fprintf(&b, "%d%c", r.Code, sep)
		if r.Enhanced != "" {
			b.WriteString(r.Enhanced)
			b.WriteByte(' ')
		}
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	return b.String()
}
