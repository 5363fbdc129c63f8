package deliver

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/spool"
)

// clientSession is one open SMTP connection to a next hop. It is used by
// one goroutine at a time.
type clientSession struct {
	conn        net.Conn // what the session talks over (TCP or TLS)
	raw         net.Conn // the TCP connection, closed to abort at once
	br          *bufio.Reader
	bw          *bufio.Writer
	ext         func(keyword string) bool // offered in the reply to our EHLO
	authParam   func() string             // the mechanisms after AUTH in that reply
	pipelining  bool                      // RFC 2920, offered
	now         func() time.Time
	remote      string
	hostname    string               // ours, as in EHLO
	tls         *tls.ConnectionState // nil in plaintext
	verified    bool                 // TLS with a certificate that verified for the hop's name
	policy      string               // TLS policy of an MX host: "none", "DANE", "MTA-STS enforce"...; "" for routes
	cmdTimeout  time.Duration
	dataTimeout time.Duration

	// dirty: a transaction was started and not ended by the reply to the
	// end of DATA, so the next message starts with RSET.
	dirty  bool
	broken bool // a Send failed mid-way: the protocol state is unknown
	closed bool
	// bodyBuf reads message bodies from the spool (writeMessage).
	bodyBuf *bufio.Reader
}

// bodyReadBuf is the buffer a session reads bodies through.
const bodyReadBuf = 32 << 10

var _ queue.Session = (*clientSession)(nil)

// Remote implements queue.Session: the address connected to, and for an
// MX host the TLS policy that applied (DANE, MTA-STS enforce or testing,
// none), which `relay queue show` then shows with each delivery.
func (s *clientSession) Remote() string {
	if s.policy == "" {
		return s.remote
	}
	return s.remote + " (policy " + s.policy + ")"
}

// Send implements queue.Session. Each recipient gets the reply to its RCPT
// if refused, else the reply to the end of DATA. A refused MAIL or DATA
// command is every (accepted) recipient's reply. An I/O error, a timeout,
// a 421 or a reply that makes no sense is an error: the session is then
// unusable.
func (s *clientSession) Send(ctx context.Context, msg *spool.Message, rcpts []string, body *spool.Body) ([]queue.Reply, error) {
	if s.broken || s.closed {
		return nil, fmt.Errorf("deliver: %s: session is no longer usable", s.remote)
	}
	// The hand-off field makes a re-send after a lost 250 harmless at a
	// next hop that is one of ours (see handoff.go). It goes on the wire
	// in front of the body, never into a copy of it.
	head := HandoffHeader(s.hostname, msg.ID, msg.Handoff)
	// Everything that could be refused locally is checked before the first
	// byte is sent, so a local problem never leaves a half transaction.
	p, err := storedParams(msg)
	if err != nil {
		return nil, fmt.Errorf("deliver: message %s: %w", msg.ID, err)
	}
	levels := levelsOf(msg, p)
	rcptLines := make([]string, len(rcpts))
	for i, r := range rcpts {
		if rcptLines[i], err = s.rcptLine(r); err != nil {
			return nil, fmt.Errorf("deliver: message %s: %w", msg.ID, err)
		}
	}
	if len(rcptLines) == 0 {
		return nil, nil
	}
	if refuse := s.cannotCarry(p); refuse != nil {
		return all(make([]queue.Reply, len(rcpts)), *refuse), nil
	}
	params, refuse, relayed := s.mailParams(p, levels, int64(len(head))+body.Size())
	if refuse != nil {
		return all(make([]queue.Reply, len(rcpts)), *refuse), nil
	}
	mail := "MAIL FROM:" + msg.From + params.String()
	if !oneCommandLine(mail) {
		return nil, fmt.Errorf("deliver: message %s: reverse path %q is not one command line", msg.ID, msg.From)
	}

	stop := context.AfterFunc(ctx, func() { s.raw.Close() })
	replies, err := s.transact(mail, rcptLines, head, body)
	if !stop() {
		// The socket was closed under us. Replies already complete stay
		// true (the message may have been delivered); the session is gone.
		s.broken = true
		if err != nil {
			return nil, fmt.Errorf("%w (interrupted: %w)", err, context.Cause(ctx))
		}
	}
	if err != nil {
		s.broken = true
		return nil, err
	}
	for i := range replies {
		if replies[i].Code/100 == 2 {
			// A hop without DSN got no NOTIFY (mailParams, rcptLine), so
			// the queue sends the "relayed" notice itself (RFC 3461 §6.2.1).
			replies[i].Relayed = !s.ext("DSN") || relayed
		}
	}
	return replies, nil
}

func all(replies []queue.Reply, r queue.Reply) []queue.Reply {
	for i := range replies {
		replies[i] = r
	}
	return replies
}

// transact runs one mail transaction: [RSET], MAIL, RCPT for each line of
// rcpts, DATA and the message. See Send for what the replies mean.
func (s *clientSession) transact(mail string, rcpts []string, head []byte, body *spool.Body) ([]queue.Reply, error) {
	lines := make([]string, 0, len(rcpts)+3)
	if s.dirty {
		lines = append(lines, "RSET")
	}
	mailAt := len(lines)
	lines = append(lines, mail)
	lines = append(lines, rcpts...)
	dataAt := len(lines)
	lines = append(lines, "DATA")

	s.dirty = true
	accepted := 0
	wire, err := s.roundTrip(lines, s.cmdTimeout, func(i int, r wireReply) bool {
		switch {
		case i < mailAt:
			return !r.ok() // RSET
		case i == mailAt:
			return !r.ok()
		case i < dataAt:
			if r.ok() {
				accepted++
			}
			return i == dataAt-1 && accepted == 0
		}
		return false
	})
	if err != nil {
		// Nothing of the message was written yet: a session that the
		// hop closed while it was cached fails here.
		return nil, s.failNotSent(lines[len(wire)], err)
	}
	for i, r := range wire {
		if r.fatal() || (i < mailAt && !r.ok()) {
			return nil, s.failReply(lines[i], r)
		}
	}

	replies := make([]queue.Reply, len(rcpts))
	switch r := wire[mailAt]; {
	case r.refusal():
		return s.endEarly(wire, dataAt, all(replies, queue.Reply{Code: r.code, Text: r.text}))
	case !r.ok():
		return nil, s.failReply(lines[mailAt], r)
	}
	accepted = 0
	for i, r := range wire[mailAt+1 : min(len(wire), dataAt)] {
		switch {
		case r.ok():
			accepted++
			// Provisional: the reply to DATA decides.
			replies[i] = queue.Reply{Code: 250, Text: "250 recipient accepted"}
		case r.refusal():
			replies[i] = queue.Reply{Code: r.code, Text: r.text}
		default:
			return nil, s.failReply(lines[mailAt+1+i], r)
		}
	}
	// The accepted recipients share the answer to DATA and to the message.
	answer := func(r wireReply) []queue.Reply {
		for i := range replies {
			if replies[i].Code == 250 {
				replies[i] = queue.Reply{Code: r.code, Text: r.text}
			}
		}
		return replies
	}
	if accepted == 0 {
		// The refusals are real answers.
		return s.endEarly(wire, dataAt, replies)
	}
	switch r := wire[dataAt]; {
	case r.code == 354:
	case r.refusal():
		return answer(r), nil
	default:
		return nil, s.failReply("DATA", r)
	}

	s.conn.SetWriteDeadline(time.Now().Add(s.dataTimeout))
	if s.bodyBuf == nil {
		s.bodyBuf = bufio.NewReaderSize(nil, bodyReadBuf)
	}
	if err := writeMessage(s.bw, head, s.bodyBuf, body.NewReader()); err != nil {
		return nil, s.fail("DATA", err)
	}
	r, err := s.readReply(s.dataTimeout)
	if err != nil {
		return nil, s.fail("end of DATA", err)
	}
	if !r.ok() && !r.refusal() {
		return nil, s.fail("end of DATA", &hopError{err: errors.New(r.text), code: r.code, text: r.text})
	}
	// RFC 5321 §4.1.1.4: any reply to the end of DATA ends the
	// transaction; the next MAIL needs no RSET.
	s.dirty = false
	return answer(r), nil
}

// endEarly finishes a transaction that carries no message: MAIL refused,
// or no recipient accepted. A pipelining server that answers the DATA sent
// along with 354 anyway now waits for a message; rather than send an
// empty one, the session is given up (the replies stay true).
func (s *clientSession) endEarly(wire []wireReply, dataAt int, replies []queue.Reply) ([]queue.Reply, error) {
	if len(wire) > dataAt && wire[dataAt].code == 354 {
		s.broken = true
	}
	return replies, nil
}

func (s *clientSession) fail(cmd string, err error) error {
	s.broken = true
	if i := strings.IndexByte(cmd, ':'); i > 0 {
		cmd = cmd[:i] // "MAIL FROM", "RCPT TO": not the whole line
	}
	return fmt.Errorf("deliver: %s: %s: %w", s.remote, cmd, err)
}

// failReply is fail for a reply that ends the session (a 421, say)
// before the message was written: the hop has accepted nothing of it.
func (s *clientSession) failReply(cmd string, r wireReply) error {
	return s.fail(cmd, &hopError{err: errors.New(r.text), code: r.code, text: r.text, notSent: true})
}

// failNotSent is fail for an I/O error before the message was written.
func (s *clientSession) failNotSent(cmd string, err error) error {
	return s.fail(cmd, &hopError{err: err, notSent: true})
}

// Close implements queue.Session: QUIT, bounded by a short timeout, then
// close. A peer that does not answer QUIT is not an error worth reporting.
func (s *clientSession) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if !s.broken {
		s.conn.SetDeadline(time.Now().Add(quitTimeout))
		s.bw.WriteString("QUIT\r\n")
		if s.bw.Flush() == nil {
			s.readReply(quitTimeout)
		}
	}
	if err := s.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("deliver: close %s: %w", s.remote, err)
	}
	return nil
}
