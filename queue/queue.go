// Package queue is the scheduler and delivery engine of the relay: it
// finds due recipients by seeking the spool's schedule index, groups them
// into lanes per next hop, hands them to a Deliverer, classifies the
// outcome (delivered, deferred with backoff, failed) and records it in the
// spool. It opens no sockets itself: SMTP delivery is a Deliverer, next
// hops come from a Router, both supplied by the relay.
//
// MT-PRIORITY (RFC 6710) is honoured in the schedule and in the lanes.
// The spool keeps one schedule index per priority class (spool/doc.go);
// a pass reads the classes above 0 first, then the ordinary index, then
// the classes below 0, so urgent work due with a backlog is dispatched
// before it. Each lane holds a few jobs in priority order, and a
// higher-priority job takes the place of the lowest-priority one in a
// full lane, which goes back to being due in the index (lane.go). When a
// next hop that was down delivers again, its priority work is made due at
// once (expedite.go). Memory stays bounded by the lanes, whatever the
// queue.
//
// Lanes also shape the traffic to their hop (shape.go): a message rate
// through a ratelimit.Limiter, sessions and messages per session, and
// an adaptive slow-down when the hop answers 421 or 4.7.x. Idle workers
// keep their sessions open for SessionIdle: that is the connection cache.
package queue

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/relay-mta/relay/spool"
)

// Hop is where a recipient goes next. Recipients of one message with the
// same Hop.Key travel in one SMTP transaction.
type Hop struct {
	// Key names the lane: equal keys share sessions and the concurrency
	// limit. For example "local", "route:c.test", "mx:example.org".
	Key string
	// Local means delivery into this relay's mailboxes; Mailbox is the
	// recipient's (it is not part of the lane identity: all local
	// recipients share the "local" lane).
	Local   bool
	Mailbox string
	// Remote next hop, used by the Deliverer: either explicit addresses
	// ("host:port", tried in order) or, when MX is set, the domain whose
	// MX records (then A/AAAA) give the addresses, on Port.
	Addrs  []string
	MX     string
	Port   int
	TLS    string // "opportunistic" | "require" | "implicit" | "none"
	Source string // what chose this hop, for logs: "route c.test", "mx", "source route"

	// How a [[route]] reaches its hop (zero for MX hops). Settings that
	// change what a session is (a login, a source address, an EHLO name)
	// are part of Key, so a session is never shared across them.
	//
	// Auth, when set, is the login given after TLS (AUTH PLAIN or LOGIN).
	Auth *Auth
	// RootCAs verify the hop under tls = "require" or "implicit" instead
	// of the Deliverer's roots; ServerName is the name its certificate
	// must carry instead of the host's.
	RootCAs    *x509.CertPool
	ServerName string
	// SourceIP is the local address to connect from; invalid: any.
	SourceIP netip.Addr
	// EHLO is the name given in EHLO; "": the Deliverer's hostname.
	EHLO string
	// Shape is the traffic shaping of the hop's lane; zero fields take
	// the Queue's defaults.
	Shape Shape
}

// Auth is a login at a next hop. Its String never shows the password.
type Auth struct {
	User, Password string
}

func (a *Auth) String() string { return "user " + a.User }

// GoString keeps the password out of %#v too.
func (a *Auth) GoString() string { return "&queue.Auth{User: " + strconv.Quote(a.User) + "}" }

// Router decides the next hop of a recipient. It does no I/O (MX lookups
// happen in the Deliverer when a session is opened), so the scheduler can
// call it inline.
type Router interface {
	// Route returns the hop and the forward path to send to it in wire
	// form (a source route may have been shortened). A *PermanentError
	// fails the recipient; any other error defers it.
	Route(to string) (hop Hop, rcptOut string, err error)
}

// Deliverer opens sessions to remote next hops.
type Deliverer interface {
	// Dial opens a session to hop (resolving MX records and falling back
	// through the addresses as needed). A *PermanentError (NXDOMAIN, null
	// MX) fails the recipients; any other error defers them.
	Dial(ctx context.Context, hop Hop) (Session, error)
}

// Session is one open SMTP connection to a next hop; it may carry many
// messages.
type Session interface {
	// Send transmits one message to the given recipients (forward paths in
	// wire form, already rewritten by the Router) and returns one Reply per
	// recipient, in order. A non-nil error means the session broke: the
	// replies are then meaningless, the caller defers every recipient with
	// that error's text and drops the session. body is read from its
	// start with body.NewReader, as often as needed.
	Send(ctx context.Context, msg *spool.Message, rcpts []string, body *spool.Body) ([]Reply, error)
	// Remote names the peer for logs and events ("127.0.0.3:2525").
	Remote() string
	Close() error
}

// Reply is the remote server's answer for one recipient: the code decides
// the outcome (2xx delivered, 4xx deferred, 5xx failed) and Text is kept
// for the event history and DSNs.
type Reply struct {
	Code int
	Text string // whole reply text, enhanced code included, e.g. "250 2.0.0 OK: queued as X"
	// Relayed is set on a 2xx from a next hop that does not advertise
	// DSN: this relay is then the last that can honour NOTIFY=SUCCESS
	// and sends a "relayed" notice (RFC 3461 §6.2.1).
	Relayed bool
}

// PermanentError marks an error that fails recipients instead of deferring
// them: NXDOMAIN, a null MX (RFC 7505), a route that cannot exist.
type PermanentError struct {
	Code int // SMTP-like code for DSNs, e.g. 550 or 556
	Err  error
}

func (e *PermanentError) Error() string { return fmt.Sprintf("%d %v", e.Code, e.Err) }
func (e *PermanentError) Unwrap() error { return e.Err }

// TemporaryError defers recipients with a reply of its own instead of
// the generic "451 4.4.1": Err's text starts with the enhanced status
// code, as in &TemporaryError{Code: 451, Err: errors.New("4.7.5 ...")}.
// A TLS policy (MTA-STS, DANE) that no next hop met is one.
type TemporaryError struct {
	Code int // 4xx
	Err  error
}

func (e *TemporaryError) Error() string { return fmt.Sprintf("%d %v", e.Code, e.Err) }
func (e *TemporaryError) Unwrap() error { return e.Err }

// IsPermanent reports whether err is (or wraps) a *PermanentError.
func IsPermanent(err error) bool {
	var pe *PermanentError
	return asPermanent(err, &pe)
}

func asPermanent(err error, pe **PermanentError) bool { return errors.As(err, pe) }
