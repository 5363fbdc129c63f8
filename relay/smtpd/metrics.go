package smtpd

import "time"

// Metrics is told about protocol events, for monitoring. Its methods are
// called from the connections' goroutines and must be quick and safe for
// concurrent use.
type Metrics interface {
	// Refused is called for every reply with a 4xx or 5xx code, with the
	// command it answers: one of the verbs this server knows ("MAIL",
	// "RCPT", "DATA", "BDAT", ...), "CONNECT" for the greeting, or
	// "OTHER" for anything else, so that clients cannot make up labels.
	Refused(command string, r Reply)
	// Accepted is called when the Backend has stored a message, with the
	// time from the end of the message to the reply that says so.
	Accepted(d time.Duration)
}

// commandName maps a client's verb onto the fixed set Metrics sees.
func commandName(verb string) string {
	switch verb {
	case "":
		return "CONNECT"
	case "EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT",
		"VRFY", "EXPN", "HELP", "STARTTLS", "AUTH":
		return verb
	}
	return "OTHER"
}
