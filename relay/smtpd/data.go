package smtpd

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
)

// MaxLineOctets is the longest line a message may have, CRLF not counted
// (RFC 5321 §4.5.3.1.6, RFC 5322 §2.1.1). Longer lines are refused: a
// relay that passed them on would send what the next hop may refuse or
// break, and a repair (folding) would break DKIM signatures.
const MaxLineOctets = 998

// Why a message is refused at the end of DATA or BDAT. Each is an
// *smtp.SMTPError, sent as it is.
var (
	ErrBareLineEnd = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "Message contains bare CR or LF; lines must end with CRLF"}
	ErrLineTooLong = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: fmt.Sprintf("Message contains a line longer than %d octets (RFC 5322 section 2.1.1)", MaxLineOctets)}
	ErrNUL = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "Message contains NUL octets"}
)

// errTooBig is the refusal of a message over the size limit.
func errTooBig(max int64) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
		Message: fmt.Sprintf("Message size exceeds fixed limit of %d bytes", max)}
}

// checker follows the content of a message as it arrives, in pieces of
// any size, and reports the first thing that makes it unacceptable: a CR
// not followed by LF or an LF not preceded by CR (SMTP smuggling), a NUL,
// or a line over MaxLineOctets.
type checker struct {
	lineLen int  // octets of the current line so far, CR LF not counted
	prevCR  bool // the last octet seen was a CR
	err     *smtp.SMTPError
}

func (c *checker) feed(b []byte) {
	for len(b) > 0 && c.err == nil {
		if c.prevCR {
			c.prevCR = false
			if b[0] != '\n' {
				c.err = ErrBareLineEnd
				return
			}
			c.lineLen = 0
			b = b[1:]
			continue
		}
		i := bytes.IndexAny(b, "\r\n\x00")
		if i < 0 {
			c.lineLen += len(b)
			break
		}
		c.lineLen += i
		switch b[i] {
		case 0:
			c.err = ErrNUL
		case '\n':
			c.err = ErrBareLineEnd
		case '\r':
			c.prevCR = true
		}
		if c.lineLen > MaxLineOctets && c.err == nil {
			c.err = ErrLineTooLong
		}
		b = b[i+1:]
	}
	if c.lineLen > MaxLineOctets && c.err == nil {
		c.err = ErrLineTooLong
	}
}

// end reports the verdict on a message that ends here.
func (c *checker) end() *smtp.SMTPError {
	if c.err == nil && c.prevCR {
		c.err = ErrBareLineEnd
	}
	return c.err
}

// dotReader reads a DATA message up to the "<CRLF>.<CRLF>" that ends it
// (RFC 5321 §4.1.1.4) and undoes dot-stuffing, handing it out as it
// arrives. Only CRLF ends a line for the terminator: "<LF>.<LF>" and
// other bare-LF or bare-CR forms never end the message, which is what
// closes SMTP smuggling. Read returns io.EOF at the end of an acceptable
// message; at the first thing that makes it unacceptable (the checker's
// findings, or more than max bytes) it returns that refusal instead,
// while drain reads on to the terminator, so that the rest is never
// taken for commands.
type dotReader struct {
	br        *bufio.Reader
	max       int64
	n         int64  // bytes handed out
	pending   []byte // the rest of the current fragment (in br's buffer)
	lineStart bool   // after a CRLF, or at the start of the message
	prevCR    bool   // the previous fragment ended with CR
	done      bool   // the terminator was read
	refusal   *smtp.SMTPError
	err       error // a read error: the connection is gone
	check     checker
}

func newDotReader(br *bufio.Reader, max int64) *dotReader {
	return &dotReader{br: br, max: max, lineStart: true}
}

func (d *dotReader) Read(p []byte) (int, error) {
	for len(d.pending) == 0 {
		switch {
		case d.err != nil:
			return 0, d.err
		case d.refusal != nil:
			return 0, d.refusal
		case d.done:
			return 0, io.EOF
		}
		d.next()
	}
	n := copy(p, d.pending)
	d.pending = d.pending[n:]
	// Fill p with what is already buffered: one line per Read would cost
	// the reader a call per line.
	for n < len(p) && len(d.pending) == 0 && !d.done && d.refusal == nil && d.err == nil && d.br.Buffered() > 0 {
		d.next()
		m := copy(p[n:], d.pending)
		d.pending = d.pending[m:]
		n += m
	}
	return n, nil
}

// next reads one fragment: a line, or the part of a long line that fits
// the buffer.
func (d *dotReader) next() {
	frag, err := d.br.ReadSlice('\n')
	partial := err == bufio.ErrBufferFull
	if err != nil && !partial {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		d.err = err
		return
	}
	n := len(frag)
	crlf := false
	if partial {
		d.prevCR = frag[n-1] == '\r'
	} else {
		crlf = (n >= 2 && frag[n-2] == '\r') || (n == 1 && d.prevCR)
		if d.lineStart && n == 3 && frag[0] == '.' && crlf {
			d.done = true
			if r := d.check.end(); r != nil && d.refusal == nil {
				d.refusal = r
			}
			return
		}
		d.prevCR = false
	}
	if d.lineStart && frag[0] == '.' {
		frag = frag[1:]
	}
	d.lineStart = !partial && crlf
	if d.refusal != nil {
		return // draining
	}
	d.check.feed(frag)
	switch {
	case d.check.err != nil:
		d.refusal = d.check.err
	case d.n+int64(len(frag)) > d.max:
		d.refusal = errTooBig(d.max)
	default:
		d.n += int64(len(frag))
		d.pending = frag
	}
}

// drain reads the rest of the message, up to its terminator, and returns
// the verdict on the whole of it: nil when it was acceptable, the refusal,
// or the read error that ended the connection.
func (d *dotReader) drain() (*smtp.SMTPError, error) {
	d.pending = nil
	for !d.done && d.err == nil {
		if d.refusal == nil {
			d.refusal = errIncomplete // the Session stopped reading early
		}
		d.next()
	}
	if d.refusal == errIncomplete {
		d.refusal = nil
	}
	return d.refusal, d.err
}

// errIncomplete marks a message the Session did not read to its end; it
// never reaches a client.
var errIncomplete = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Message not read to its end"}

// bdatStream carries the chunks of one BDAT message (RFC 3030) to the
// Session's Data, which runs in a goroutine of its own reading from a
// pipe: each chunk is written into the pipe as it arrives from the
// network, so a message of any size costs the pipe's hand-over only.
type bdatStream struct {
	pw     *io.PipeWriter
	size   int64 // bytes of the message so far
	check  checker
	failed *smtp.SMTPError // the message is refused; later chunks are dropped
	broken bool            // Data stopped reading: chunks are dropped
	done   chan struct{}
	id     string // Data's results, valid once done is closed
	err    error
}

// errBDATAborted ends a BDAT message the client abandoned (RSET, a new
// EHLO, the connection lost); the Session discards what it has.
var errBDATAborted = errors.New("smtpd: BDAT message abandoned")

// startBDAT starts the Session's Data on a new BDAT message.
func (c *conn) startBDAT() *bdatStream {
	pr, pw := io.Pipe()
	b := &bdatStream{pw: pw, done: make(chan struct{})}
	sess := c.sess
	go func() {
		defer close(b.done)
		b.id, b.err = sess.Data(pr)
		// Whatever the Session left unread is dropped, never waited for.
		pr.CloseWithError(errBDATAborted)
	}()
	return b
}

// abort ends the message, refused or abandoned, and waits for Data.
func (b *bdatStream) abort(err error) {
	b.pw.CloseWithError(err)
	<-b.done
}

// finish ends an acceptable message and returns Data's results.
func (b *bdatStream) finish() (string, error) {
	b.pw.Close()
	<-b.done
	return b.id, b.err
}

func (c *conn) bdatCmd(arg string) {
	sizeText, last, _ := strings.Cut(strings.TrimSpace(arg), " ")
	size, err := strconv.ParseInt(chunkDigits(sizeText), 10, 64)
	if err != nil || size < 0 || (last != "" && !strings.EqualFold(strings.TrimSpace(last), "LAST")) {
		// Without a size the chunk cannot be skipped: the rest of the
		// input can no longer be told apart from commands.
		c.writeReply(reply(501, "5.5.4", "Syntax: BDAT size [LAST]"))
		c.writeReply(reply(421, "4.7.0", "%s Closing connection after unparsable BDAT", c.srv.Hostname))
		c.quit = true
		return
	}
	isLast := last != ""
	// The chunk is read whatever the verdict, so that its bytes are never
	// taken for commands (RFC 3030 §3).
	ok := c.bdat != nil || (c.esmtp && c.checkReadyForDataQuiet())
	c.dr.Timeout = orDefault(c.srv.DataTimeout, DefaultDataTimeout)
	if !ok {
		if err := c.skip(size); err != nil {
			c.readFailed(err)
			c.quit = true
			return
		}
		if !c.esmtp {
			c.writeReply(reply(503, "5.5.1", "Send EHLO first"))
		} else {
			c.checkReadyForData()
		}
		return
	}
	if c.bdat == nil {
		c.bdat = c.startBDAT()
	}
	b := c.bdat
	if max := orDefault(c.srv.MaxMessageSize, DefaultMaxMessageSize); b.size+size > max {
		b.failed = errTooBig(max)
	}
	if err := c.copyChunk(b, size); err != nil {
		c.readFailed(err)
		c.quit = true
		return
	}
	if b.failed != nil {
		// RFC 3030: the client must not send more chunks after a failure.
		c.writeReply(errorReply(b.failed))
		c.reset()
		return
	}
	if !isLast {
		select {
		case <-b.done: // Data gave up early: its answer is the message's
			c.finishMessage(b.id, b.err, nil, time.Now())
		default:
			c.writeReply(reply(250, "2.0.0", "%d octets received", size))
		}
		return
	}
	if r := b.check.end(); r != nil {
		c.writeReply(errorReply(r))
		c.reset()
		return
	}
	id, err := b.finish()
	c.finishMessage(id, err, nil, time.Now())
}

// copyChunk hands the next size bytes of the connection, a BDAT chunk,
// to the message's Data as they arrive; once the message has failed, or
// Data has stopped reading, they are read and dropped. The error is a
// read error only: the connection is gone.
func (c *conn) copyChunk(b *bdatStream, size int64) error {
	for size > 0 {
		if _, err := c.br.Peek(1); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		p, _ := c.br.Peek(int(min(int64(c.br.Buffered()), size)))
		if b.failed == nil {
			b.check.feed(p)
			if b.check.err != nil {
				b.failed = b.check.err
			}
		}
		if b.failed == nil && !b.broken {
			// Write returns once Data has read all of p, so p (br's
			// buffer) is not reused before then.
			if _, err := b.pw.Write(p); err != nil {
				b.broken = true
			}
		}
		b.size += int64(len(p))
		size -= int64(len(p))
		c.br.Discard(len(p))
	}
	return nil
}

// skip reads and drops n bytes of the connection.
func (c *conn) skip(n int64) error {
	_, err := io.CopyN(io.Discard, c.br, n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// checkReadyForDataQuiet is checkReadyForData without a reply.
func (c *conn) checkReadyForDataQuiet() bool {
	return c.mailFrom != nil && c.rcpts > 0
}
