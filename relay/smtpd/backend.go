// Package smtpd is the protocol layer of an SMTP server (RFC 5321 with
// PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, DSN, CHUNKING,
// STARTTLS and AUTH): it parses commands, enforces limits and hands the
// envelope and message to a Backend, in the way net/http hands requests to a
// Handler. It knows nothing about spools, routes or users; every policy
// decision is the Backend's.
//
// The project has its own server layer, rather than go-smtp's, because
// source routes ("RCPT TO:<@a,@b:u@c>"), "<postmaster>" and quoted local
// parts must reach the policy exactly as the client sent them.
package smtpd

import (
	"crypto/tls"
	"io"
	"net"

	"github.com/relay-mta/relay/envelope"
)

// ConnInfo describes a new connection to the Backend.
type ConnInfo struct {
	RemoteAddr net.Addr
	LocalAddr  net.Addr
	// ImplicitTLS is true on a listener that speaks TLS from the first byte
	// (RFC 8314).
	ImplicitTLS bool
}

// HelloInfo is what the Backend learns at each EHLO or HELO.
type HelloInfo struct {
	Name  string // the argument of EHLO/HELO, as sent
	ESMTP bool   // EHLO rather than HELO
	// TLS is the state of the connection's TLS session, nil in plaintext.
	TLS *tls.ConnectionState
}

// Backend creates a Session per connection. NewSession may refuse the
// connection by returning an error; an *smtp.SMTPError is sent as the
// greeting reply (e.g. 554 5.7.1), any other error becomes 421 4.3.0.
type Backend interface {
	NewSession(c ConnInfo) (Session, error)
}

// Session carries the policy for one connection. Methods are called from
// the connection's goroutine only, in protocol order.
//
// A method that refuses returns an error: an *smtp.SMTPError (from
// github.com/emersion/go-smtp) is sent to the client unchanged; any other
// error is a local failure and becomes 451 4.3.0, so that the client retries
// and nothing is lost.
type Session interface {
	// Hello is called for each accepted EHLO/HELO, including the one that
	// must follow STARTTLS.
	Hello(h HelloInfo) error
	// Auth checks credentials from AUTH PLAIN or LOGIN. identity is the
	// PLAIN authorization identity ("" when absent or for LOGIN).
	Auth(identity, username, password string) error
	// Mail starts a transaction.
	Mail(from envelope.Path, p envelope.MailParams) error
	// Rcpt adds a recipient; the route, quoting and "<postmaster>" are
	// preserved.
	Rcpt(to envelope.Path, p envelope.RcptParams) error
	// Data receives the message as it arrives (DATA dot-unstuffed, or the
	// BDAT chunks one after the other) from r. r returns io.EOF at the end
	// of a message that passed this package's checks (size limit, CRLF
	// line ends only, no NUL, no line over MaxLineOctets); otherwise it
	// returns the refusal (an *smtp.SMTPError) or the read error that
	// ended the connection, and Data must store nothing and return an
	// error. Data may return early with an error (no space, say); the
	// rest of the message is then read and dropped. On success it returns
	// the queue ID for the "250 2.0.0 OK: queued as ID" reply, which must
	// mean the message is safely stored. For BDAT, Data runs in a
	// goroutine of its own while the connection's goroutine feeds it; no
	// other Session method is called until it has returned.
	Data(r io.Reader) (queueID string, err error)
	// Reset abandons the current transaction (RSET, EHLO, end of DATA,
	// STARTTLS).
	Reset()
	// Close is called once when the connection ends.
	Close()
}
