// Package pop3d is the protocol layer of a POP3 server (RFC 1939, with
// CAPA and response codes from RFC 2449, STLS from RFC 2595 and the
// [AUTH] and [SYS/TEMP] codes of RFC 3206): it parses commands, keeps the
// session's state (AUTHORIZATION, TRANSACTION, UPDATE), enforces limits
// and hands logins, message reads and deletions to a Backend, in the way
// package smtpd hands SMTP transactions to its Backend. It knows nothing
// about spools or users files.
//
// What a client can rely on:
//
//   - USER and PASS are refused before TLS (STLS or an implicit-TLS
//     listener) unless Server.AllowInsecureAuth is set, or the client is
//     on a loopback address and Server.LoopbackIsSecure is set, so that a
//     password never crosses the network in the clear by accident; CAPA
//     lists USER only when it would be accepted.
//   - The maildrop is a snapshot taken at login: messages that arrive
//     during the session appear in the next one. Message numbers are
//     1-based indexes into that snapshot; UIDs (UIDL) are the Backend's and
//     do not change between sessions.
//   - DELE only marks a message. The marked messages are removed when the
//     client says QUIT (the UPDATE state), in one call to
//     Maildrop.Delete; a connection that ends any other way (dropped,
//     timed out, server shutdown) removes nothing.
//   - A second session for a maildrop that is in use is told
//     "-ERR [IN-USE]" (RFC 2449 §8.1.1) when the Backend says ErrInUse.
//   - A client the Backend blocks (ErrBlocked) is told "-ERR [SYS/TEMP]"
//     that the block is temporary, and the server hangs up.
//   - Failed logins are answered more slowly each time (per client
//     address, so reconnecting does not reset the delay; a Backend that
//     throttles by itself can turn this off), and after MaxAuthFailures
//     on one connection the server hangs up.
//   - Multi-line responses are byte-stuffed (a line starting with '.' is
//     sent with another '.') and end with CRLF "." CRLF; message bytes are
//     otherwise sent exactly as the Backend returns them.
//   - Command lines longer than MaxLineLength, unknown commands and
//     commands in the wrong state get "-ERR" with the reason; after
//     MaxErrors of them the server hangs up. The server never panics on
//     input: a panic in a Backend is logged and ends only its connection.
package pop3d

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
)

// ConnInfo describes the connection a login arrives on.
type ConnInfo struct {
	RemoteAddr net.Addr
	LocalAddr  net.Addr
	// TLS is the state of the connection's TLS session, nil in plaintext.
	TLS *tls.ConnectionState
}

// Errors a Backend returns from Login (possibly wrapped) to choose the
// reply. Any other error is a temporary failure, "-ERR [SYS/TEMP]".
var (
	// ErrAuthFailed: unknown user or wrong password; the client is not
	// told which. Counts as a failed login.
	ErrAuthFailed = errors.New("pop3d: invalid user name or password")
	// ErrInUse: the credentials are right but another session holds the
	// maildrop ("-ERR [IN-USE]").
	ErrInUse = errors.New("pop3d: maildrop in use")
	// ErrBlocked: the client's address is temporarily blocked (too many
	// failed logins); the credentials were not checked. Answered
	// "-ERR [SYS/TEMP]" (RFC 3206 §4) and the connection closed, so that a
	// user with the right password learns to wait rather than to doubt it.
	ErrBlocked = errors.New("pop3d: address temporarily blocked")
)

// BlockedError is ErrBlocked with the reason the client is told, such as
// how long the block lasts (errors.Is(err, ErrBlocked) holds).
type BlockedError struct {
	Reason string // one line, after "-ERR [SYS/TEMP] "
}

func (e *BlockedError) Error() string        { return "pop3d: address temporarily blocked: " + e.Reason }
func (e *BlockedError) Is(target error) bool { return target == ErrBlocked }

// Backend opens maildrops. It is called from many connections at once.
type Backend interface {
	// Login checks username and password and, when they are right, opens
	// and locks the user's maildrop for this session. It returns an
	// error wrapping ErrAuthFailed or ErrInUse to refuse.
	Login(c ConnInfo, username, password string) (Maildrop, error)
}

// MessageInfo describes one message of a maildrop.
type MessageInfo struct {
	// UID is the message's unique-id for UIDL: 1 to 70 characters from
	// 0x21 to 0x7E, never reused for another message of the maildrop, the
	// same in every session (RFC 1939 §7).
	UID string
	// Size is the exact size of the message in octets, as Message returns
	// it.
	Size int64
}

// Maildrop is one user's mailbox, opened for one session. Its methods are
// called from that session's goroutine only.
type Maildrop interface {
	// Messages lists the maildrop, oldest first; it is called once, right
	// after Login, and the session works on that list until it ends.
	Messages() ([]MessageInfo, error)
	// Message opens message i (an index into the list), with CRLF line
	// endings, for reading as a stream: exactly the Size that Messages
	// said. The session closes it.
	Message(i int) (io.ReadCloser, error)
	// Delete removes the messages at the given indexes for good, all of
	// them or none (the UPDATE state, at QUIT). It is not called when no
	// message was marked.
	Delete(indexes []int) error
	// Close releases the maildrop and its lock. It is called exactly once,
	// last, however the session ends.
	Close()
}
