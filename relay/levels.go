package relay

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/spool"
)

// levels is what a message asks of its next hops that go-smtp's
// MailOptions cannot carry: its MT-PRIORITY (RFC 6710) and its BY
// deadline (RFC 2852).
type levels struct {
	priority int8
	byMode   envelope.ByMode // "" without BY
	deadline time.Time       // arrival here plus the by-time it came with
	byTrace  bool
}

func levelsOf(msg *spool.Message) (levels, error) {
	p, err := envelope.ParseMailParams(strings.TrimSpace(msg.MailParams))
	if err != nil {
		return levels{}, fmt.Errorf("stored MAIL parameters: %w", err)
	}
	l := levels{priority: p.Priority}
	if p.ByMode != "" {
		l.byMode, l.byTrace = p.ByMode, p.ByTrace
		l.deadline = msg.Received.Add(time.Duration(p.ByTime) * time.Second)
	}
	return l, nil
}

// levelParams decides what this session's next hop gets of l:
//
//   - MT-PRIORITY=n when the hop advertises MT-PRIORITY (RFC 6710 §4: to
//     one that does not, the message goes on without it);
//   - BY=<seconds left>;<mode> when the hop advertises DELIVERBY, the
//     by-time decremented by the time the message spent here (RFC 2852
//     §4), rounded down so that the deadline never moves later;
//   - to a hop without DELIVERBY, a BY=…;R message cannot keep its
//     deadline and is returned (refuse, a 5.4.7 reply for every
//     recipient); a BY=…;N message is relayed, and relayed reports that
//     its delivery is a "relayed" one for DSN purposes (RFC 2852 §4.3,
//     RFC 3461 §6.2.1: a notice if NOTIFY asked for SUCCESS).
//
// extra is in wire form, each parameter preceded by a space.
func (s *clientSession) levelParams(l levels) (extra, refuse string, relayed bool) {
	var p envelope.MailParams
	if l.priority != 0 {
		if ok, _ := s.c.Extension("MT-PRIORITY"); ok {
			p.Priority = l.priority
		}
	}
	if l.byMode != "" {
		ok, _ := s.c.Extension("DELIVERBY")
		switch {
		case ok:
			left := l.deadline.Sub(s.now())
			secs := int64(left / time.Second)
			if left < 0 && left%time.Second != 0 {
				secs-- // round toward the past for negative times too
			}
			if l.byMode == envelope.ByReturn && secs <= 0 {
				// RFC 2852 §4.1: a by-time of 0 or less is invalid with R;
				// the deadline has passed here.
				return "", "554 5.4.7 Delivery time expired: the BY deadline passed before the message could be relayed", false
			}
			p = p.WithBy(secs)
			p.ByMode, p.ByTrace = l.byMode, l.byTrace
		case l.byMode == envelope.ByReturn:
			return "", fmt.Sprintf("554 5.4.7 Delivery time expired: next hop %s does not support DELIVERBY, so the BY=;R deadline cannot be kept past it", s.remote), false
		default:
			relayed = true
		}
	}
	return p.String(), "", relayed
}

// mailLineConn sits between go-smtp's client and its connection. While
// armed, it appends extra to the next "MAIL FROM:" command line the client
// writes, once; every other byte passes through unchanged. go-smtp v0.25.1
// has no MailOptions for MT-PRIORITY or BY and writes each command with
// one flush, and the session arms it only around its own call of Mail, so
// the only line it can change is the MAIL command of that transaction.
type mailLineConn struct {
	net.Conn
	extra string // "" when disarmed
	line  []byte // bytes held while armed, up to a line end
}

// maxHeldLine bounds what an armed mailLineConn holds while waiting for a
// line end; a MAIL command is far shorter (RFC 5321 §4.5.3.1.4 and its
// extensions), so more means it is not one and goes through untouched.
const maxHeldLine = 8192

func (c *mailLineConn) arm(extra string) { c.extra, c.line = extra, nil }

// disarm stops rewriting, writing out anything still held (nothing, when
// the client flushed its MAIL line as it does).
func (c *mailLineConn) disarm() error {
	held := c.line
	c.extra, c.line = "", nil
	if len(held) > 0 {
		_, err := c.Conn.Write(held)
		return err
	}
	return nil
}

func (c *mailLineConn) Write(p []byte) (int, error) {
	if c.extra == "" && len(c.line) == 0 {
		return c.Conn.Write(p)
	}
	c.line = append(c.line, p...)
	var out []byte
	for c.extra != "" {
		i := bytes.Index(c.line, []byte("\r\n"))
		if i < 0 {
			if len(c.line) > maxHeldLine {
				c.extra = ""
			}
			break
		}
		ln := c.line[:i]
		out = append(out, ln...)
		if len(ln) >= 10 && strings.EqualFold(string(ln[:10]), "MAIL FROM:") {
			out = append(out, c.extra...)
			c.extra = ""
		}
		out = append(out, '\r', '\n')
		c.line = c.line[i+2:]
	}
	if c.extra == "" {
		out = append(out, c.line...)
		c.line = nil
	}
	if len(out) > 0 {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
