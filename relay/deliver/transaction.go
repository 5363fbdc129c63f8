package deliver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/relay-mta/relay/queue"
)

// This file is the mail transaction of a delivery session on the wire:
// RSET, MAIL, RCPT, DATA, the message and the replies.
//
// go-smtp's client opens the session (greeting, EHLO with its HELO
// fallback, STARTTLS) but not the transaction: it waits for the reply to
// each command before writing the next, so a one-recipient message costs
// four round trips. With PIPELINING (RFC 2920) the commands up to DATA go
// in one write and the message in a second, which halves the writes and
// the wake-ups on both ends of every hop; and go-smtp has no parameters
// for MT-PRIORITY and BY, which the MAIL line here simply carries.

// wireReply is one SMTP reply: its code and its text as one line, code
// first ("550 5.1.1 No such user").
type wireReply struct {
	code int
	text string
}

// fatal reports a reply after which the session cannot go on: 421 (RFC
// 5321 §3.8, the server is closing the connection) or a code that is not a
// reply to a command at all.
func (r wireReply) fatal() bool { return r.code == 421 || r.code < 200 || r.code > 599 }

// refusal reports a 4xx or 5xx answer that refuses only this command.
func (r wireReply) refusal() bool { return r.code >= 400 && !r.fatal() }

func (r wireReply) ok() bool { return r.code >= 200 && r.code < 300 }

const (
	// maxReplyLine bounds one reply line; RFC 5321 §4.5.3.1.5 says 512
	// octets, generously exceeded by some servers' EHLO replies.
	maxReplyLine = 4096
	// maxReplyLines bounds a multi-line reply, so that a hostile server
	// cannot make us buffer without end.
	maxReplyLines = 100
)

// maxPipelined is the most commands written before their replies are read.
const maxPipelined = 100

var errReplySyntax = errors.New("malformed reply")

// hopError is an error of a session to a next hop that the queue looks
// into (queue.Throttled, queue.NotSent): the reply it stands for, if any,
// and whether the hop can have accepted anything of the message.
type hopError struct {
	err     error
	code    int    // the reply's code; 0 for an I/O error
	text    string // the reply, code first
	notSent bool   // failed before the message was written
}

func (e *hopError) Error() string { return e.err.Error() }
func (e *hopError) Unwrap() error { return e.err }

// Throttled reports a reply asking us to slow down (421, 4.7.x).
func (e *hopError) Throttled() bool { return queue.IsThrottleReply(e.code, e.text) }

// NotSent reports a failure before any of the message was written.
func (e *hopError) NotSent() bool { return e.notSent }

// replyErr keeps the reply of an error from go-smtp's client (the opening
// exchange) where the queue can see it.
func replyErr(err error) error {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return err
	}
	text := fmt.Sprintf("%d %s", se.Code, se.Message)
	if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
		text = fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	}
	return &hopError{err: err, code: se.Code, text: text, notSent: true}
}

// readReply reads one (possibly multi-line) reply within timeout.
func (s *clientSession) readReply(timeout time.Duration) (wireReply, error) {
	s.conn.SetReadDeadline(time.Now().Add(timeout))
	var texts []string
	code := -1
	for n := 0; ; n++ {
		line, err := s.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return wireReply{}, fmt.Errorf("%w: line longer than %d bytes", errReplySyntax, maxReplyLine)
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return wireReply{}, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) < 3 || (len(line) > 3 && line[3] != ' ' && line[3] != '-') {
			return wireReply{}, fmt.Errorf("%w: %q", errReplySyntax, line)
		}
		c, err := strconv.Atoi(string(line[:3]))
		if err != nil || c < 100 {
			return wireReply{}, fmt.Errorf("%w: %q", errReplySyntax, line)
		}
		if code >= 0 && c != code {
			return wireReply{}, fmt.Errorf("%w: code %d in a reply that began with %d", errReplySyntax, c, code)
		}
		code = c
		if len(line) > 4 {
			texts = append(texts, string(line[4:]))
		}
		if len(line) == 3 || line[3] == ' ' {
			break
		}
		if n+1 >= maxReplyLines {
			return wireReply{}, fmt.Errorf("%w: more than %d lines", errReplySyntax, maxReplyLines)
		}
	}
	text := strconv.Itoa(code)
	if t := oneLine(strings.Join(texts, "\n")); t != "" {
		text += " " + t
	}
	return wireReply{code: code, text: text}, nil
}

// roundTrip writes lines as commands and returns their replies in order.
// With PIPELINING they go in one write and every reply is read (RFC 2920
// §3.1); otherwise each waits for its reply, and the exchange ends early
// when stop says so after a reply (a refused MAIL makes RCPTs pointless),
// so fewer replies than lines may come back. A reply that is fatal ends
// the exchange too; the caller sees it as the last reply.
func (s *clientSession) roundTrip(lines []string, timeout time.Duration, stop func(i int, r wireReply) bool) ([]wireReply, error) {
	s.conn.SetWriteDeadline(time.Now().Add(timeout))
	replies := make([]wireReply, 0, len(lines))
	if s.pipelining {
		// In groups: a server may stop reading while its replies wait for
		// us to read them (RFC 2920 §3.1), so a group's replies must fit
		// the socket buffers.
		for start := 0; start < len(lines); start += maxPipelined {
			group := lines[start:min(start+maxPipelined, len(lines))]
			for _, l := range group {
				s.bw.WriteString(l)
				s.bw.WriteString("\r\n")
			}
			if err := s.bw.Flush(); err != nil {
				return replies, err
			}
			for range group {
				r, err := s.readReply(timeout)
				if err != nil {
					return replies, err
				}
				replies = append(replies, r)
				if r.fatal() {
					return replies, nil
				}
			}
		}
		return replies, nil
	}
	for i, l := range lines {
		s.bw.WriteString(l)
		s.bw.WriteString("\r\n")
		if err := s.bw.Flush(); err != nil {
			return replies, err
		}
		r, err := s.readReply(timeout)
		if err != nil {
			return replies, err
		}
		replies = append(replies, r)
		if r.fatal() || stop(i, r) {
			break
		}
	}
	return replies, nil
}

// writeMessage writes head, then body, as DATA content (RFC 5321
// §4.5.2): a dot at the start of a line is doubled, a bare LF becomes
// CRLF, the last line of each is ended, and the terminating "." follows.
// The body streams through br (reset to it here), so a message of any
// size costs the buffers only; head, the header fields we add, goes in
// front without a copy of the body.
func writeMessage(w *bufio.Writer, head []byte, br *bufio.Reader, body io.Reader) error {
	for len(head) > 0 {
		if head[0] == '.' {
			w.WriteByte('.')
		}
		i := bytes.IndexByte(head, '\n')
		if i < 0 {
			w.Write(head)
			w.WriteString("\r\n")
			break
		}
		if i > 0 && head[i-1] == '\r' {
			w.Write(head[:i+1])
		} else {
			w.Write(head[:i])
			w.WriteString("\r\n")
		}
		head = head[i+1:]
	}
	br.Reset(body)
	lineStart := true
	heldCR := false // a fragment ended in CR: written once we know what follows
	for {
		frag, err := br.ReadSlice('\n')
		if len(frag) > 0 {
			if heldCR && frag[0] != '\n' {
				w.WriteByte('\r')
			}
			if lineStart && frag[0] == '.' {
				w.WriteByte('.')
			}
			heldCR = false
			if n := len(frag) - 1; frag[n] == '\n' {
				switch {
				case n > 0 && frag[n-1] == '\r':
					w.Write(frag)
				default:
					w.Write(frag[:n]) // bare LF, or the LF after a held CR
					w.WriteString("\r\n")
				}
				lineStart = true
			} else {
				if frag[n] == '\r' {
					frag, heldCR = frag[:n], true
				}
				w.Write(frag)
				lineStart = false
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if heldCR {
		w.WriteByte('\r')
	}
	if !lineStart || heldCR {
		w.WriteString("\r\n")
	}
	w.WriteString(".\r\n")
	return w.Flush()
}
