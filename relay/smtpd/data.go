package smtpd

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"strings"
	"sync"
)

// dataResult says why a message read to its end cannot be accepted.
type dataResult struct {
	tooBig bool // more than the size limit; the excess was read and dropped
	bareLF bool // an LF not preceded by CR
	bareCR bool // a CR not followed by LF
}

// readDotData reads a DATA message up to the "<CRLF>.<CRLF>" that ends it
// (RFC 5321 §4.1.1.4) and undoes dot-stuffing. Only CRLF ends a line for
// the terminator: "<LF>.<LF>" and other bare-LF or bare-CR forms never end
// the message, which is what closes SMTP smuggling; they are reported so
// the message is refused. At most max bytes are kept.
func readDotData(r *bufio.Reader, max int64) ([]byte, dataResult, error) {
	body := dataBufs.Get().(*bytes.Buffer)
	defer func() {
		if body.Cap() <= maxPooledData {
			body.Reset()
			dataBufs.Put(body)
		}
	}()
	var (
		res       dataResult
		lineStart = true  // after a CRLF, or at the start of the message
		prevCR    = false // the previous fragment ended with CR
	)
	for {
		frag, err := r.ReadSlice('\n')
		partial := err == bufio.ErrBufferFull
		if err != nil && !partial {
			return nil, res, err
		}
		n := len(frag)
		crlf := false
		if prevCR && frag[0] != '\n' {
			res.bareCR = true
		}
		if partial {
			// A long line: no LF in this fragment; a CR at its end may
			// pair with an LF at the start of the next one.
			if bytes.IndexByte(frag[:n-1], '\r') >= 0 {
				res.bareCR = true
			}
			prevCR = frag[n-1] == '\r'
		} else {
			crlf = (n >= 2 && frag[n-2] == '\r') || (n == 1 && prevCR)
			if !crlf {
				res.bareLF = true
			}
			if n > 2 && bytes.IndexByte(frag[:n-2], '\r') >= 0 {
				res.bareCR = true
			}
			if lineStart && n == 3 && frag[0] == '.' && crlf {
				break
			}
			prevCR = false
		}
		if lineStart && frag[0] == '.' {
			frag = frag[1:]
		}
		lineStart = !partial && crlf
		if !res.tooBig {
			if int64(body.Len()+len(frag)) > max {
				res.tooBig = true
				body.Reset() // drop what was kept; it will not be used
			} else {
				body.Write(frag)
			}
		}
	}
	return bytes.Clone(body.Bytes()), res, nil
}

// dataBufs holds the buffers DATA is read into. The message is copied out
// at its exact size, so a buffer grows to the size of the messages once
// instead of through a dozen reallocations for every large message.
var dataBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledData: larger buffers are left to the garbage collector, so that
// one huge message does not pin its memory in the pool.
const maxPooledData = 1 << 20

// hasBareCRLF reports a CR not followed by LF or an LF not preceded by CR.
func hasBareCRLF(b []byte) (bareCR, bareLF bool) {
	for i := 0; i < len(b); {
		j := bytes.IndexAny(b[i:], "\r\n")
		if j < 0 {
			break
		}
		i += j
		if b[i] == '\n' {
			bareLF = true
			i++
			continue
		}
		if i+1 >= len(b) || b[i+1] != '\n' {
			bareCR = true
			i++
			continue
		}
		i += 2
	}
	return
}

// bdatState collects the chunks of one BDAT message (RFC 3030).
type bdatState struct {
	body   bytes.Buffer
	tooBig bool
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
	var sink io.Writer = io.Discard
	maxSize := orDefault(c.srv.MaxMessageSize, DefaultMaxMessageSize)
	if ok {
		if c.bdat == nil {
			c.bdat = &bdatState{}
		}
		if !c.bdat.tooBig && int64(c.bdat.body.Len())+size <= maxSize {
			// The chunk size is known: one allocation, but not more than a
			// client could claim without sending the bytes.
			c.bdat.body.Grow(int(min(size, maxPooledData)))
			sink = &c.bdat.body
		} else {
			c.bdat.tooBig = true
			c.bdat.body = bytes.Buffer{}
		}
	}
	if _, err := io.CopyN(sink, c.br, size); err != nil {
		c.readFailed(err)
		c.quit = true
		return
	}
	if !ok {
		if !c.esmtp {
			c.writeReply(reply(503, "5.5.1", "Send EHLO first"))
		} else {
			c.checkReadyForData()
		}
		return
	}
	if c.bdat.tooBig {
		// RFC 3030: the client must not send more chunks after a failure.
		c.writeReply(reply(552, "5.3.4", "Message size exceeds fixed limit of %d bytes", maxSize))
		c.reset()
		return
	}
	if !isLast {
		c.writeReply(reply(250, "2.0.0", "%d octets received", size))
		return
	}
	msg := c.bdat.body.Bytes()
	var res dataResult
	res.bareCR, res.bareLF = hasBareCRLF(msg)
	c.finishMessage(msg, res)
}

// checkReadyForDataQuiet is checkReadyForData without a reply.
func (c *conn) checkReadyForDataQuiet() bool {
	return c.mailFrom != nil && c.rcpts > 0
}
