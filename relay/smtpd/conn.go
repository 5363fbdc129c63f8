package smtpd

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/relay/accept"
)

// conn is the state of one SMTP connection.
type conn struct {
	srv *Server
	raw net.Conn // the accepted connection, for deadlines and Close
	nc  net.Conn // raw, or the TLS connection over it after STARTTLS
	log *slog.Logger

	br *bufio.Reader
	bw *bufio.Writer
	dr accept.Reader // under br: deadlines, and the stop of idle reads

	sess Session
	ip   netip.Addr
	// trusted is set for a privileged session (Server.Trusted, or AUTH),
	// read by the Server's accounting of slots from other goroutines.
	trusted atomic.Bool
	// idleSince is when the session began to wait for a command (Unix
	// nanoseconds), 0 while it is busy; read by the Server to choose
	// which session to close under load.
	idleSince atomic.Int64
	tls       *tls.ConnectionState
	helo      string
	esmtp     bool
	authUser  string
	errors    int
	quit      bool

	sessionEnd   time.Time // SessionTimeout after the connection began
	commands     int
	sessionRcpts int
	rcptMisses   int    // refused recipients, for the tarpit
	verb         string // of the command being answered, for Metrics

	// Transaction state.
	mailFrom   *envelope.Path
	mailParams envelope.MailParams
	rcpts      int
	rcptTried  bool
	bdat       *bdatStream // a BDAT message in progress
}

// Buffers are pooled: a client that opens a connection per message (as
// many MTAs and smtp-source do) would otherwise cost 32 KiB of garbage per
// message.
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
)

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, raw: nc, nc: nc}
	c.log = s.logger().With("client", nc.RemoteAddr().String())
	c.dr.Conn, c.dr.Src, c.dr.Group = nc, nc, &s.group
	c.dr.Timeout = orDefault(s.CommandTimeout, DefaultCommandTimeout)
	if size := orDefault(s.MaxLineLength, DefaultMaxLineLength) + 2; size > 16<<10 {
		c.br = bufio.NewReaderSize(&c.dr, size)
	} else {
		c.br = readerPool.Get().(*bufio.Reader)
		c.br.Reset(&c.dr)
	}
	c.bw = writerPool.Get().(*bufio.Writer)
	c.bw.Reset(nc)
	return c
}

// release returns the connection's buffers to the pools.
func (c *conn) release() {
	if c.br.Size() == 16<<10 {
		c.br.Reset(nil)
		readerPool.Put(c.br)
	}
	c.bw.Reset(nil)
	writerPool.Put(c.bw)
	c.br, c.bw = nil, nil
}

// evict closes the session at its (current or next) wait for a command,
// with "421 4.7.0 ... server busy": the server needs its slot.
func (c *conn) evict() { c.dr.Evict() }

// evicted reports whether evict was called; such a session no longer
// counts as holding a slot.
func (c *conn) evicted() bool { return c.dr.Evicted.Load() }

// idleFor is how long the session has been waiting for a command at now;
// 0 when it is busy.
func (c *conn) idleFor(now time.Time) time.Duration {
	since := c.idleSince.Load()
	if since == 0 {
		return 0
	}
	return now.Sub(time.Unix(0, since))
}

// commandTimeout is how long the session may take to send a command:
// under stress an outside session gets the short StressTimeout.
func (c *conn) commandTimeout() time.Duration {
	d := orDefault(c.srv.CommandTimeout, DefaultCommandTimeout)
	if !c.trusted.Load() && c.srv.stressed() {
		d = min(d, c.srv.stressTimeout())
	}
	return d
}

// Abort implements accept.Session: it closes the connection at once.
func (c *conn) Abort() { c.raw.Close() }

// WakeIfIdle implements accept.Session: a session waiting for a command
// sees its read time out, and ends as the server is stopping.
func (c *conn) WakeIfIdle() { c.dr.WakeIfIdle() }

func (c *conn) serve(refuse *Reply) {
	defer c.release()
	defer c.nc.Close()
	c.sessionEnd = time.Now().Add(orDefault(c.srv.SessionTimeout, DefaultSessionTimeout))
	c.dr.Limit = c.sessionEnd
	// A client that stops reading our replies cannot hold us past the
	// session limit either.
	c.raw.SetWriteDeadline(c.sessionEnd)
	defer func() {
		if v := recover(); v != nil {
			c.log.Error("smtpd: panic serving connection", "panic", v, "stack", string(debug.Stack()))
			c.writeReply(reply(421, "4.3.0", "%s Internal error, closing connection", c.srv.Hostname))
			c.bw.Flush()
		}
		if c.bdat != nil {
			c.bdat.abort(errBDATAborted)
			c.bdat = nil
		}
		if c.sess != nil {
			c.sess.Close()
		}
	}()
	if refuse != nil {
		c.writeReply(*refuse)
		c.bw.Flush()
		return
	}
	info := ConnInfo{RemoteAddr: c.nc.RemoteAddr(), LocalAddr: c.nc.LocalAddr()}
	if tc, ok := c.nc.(*tls.Conn); ok {
		info.ImplicitTLS = true
		tc.SetDeadline(time.Now().Add(c.dr.Timeout))
		if err := tc.Handshake(); err != nil {
			c.log.Info("smtpd: TLS handshake failed", "err", err)
			return
		}
		tc.SetDeadline(time.Time{})
		st := tc.ConnectionState()
		c.tls = &st
	}
	sess, err := c.srv.Backend.NewSession(info)
	if err != nil {
		r := errorReply(err)
		if r.Code < 400 {
			r = reply(421, "4.3.0", "Local error, try again later")
		}
		c.writeReply(r)
		c.bw.Flush()
		return
	}
	c.sess = sess
	c.writeReply(reply(220, "", "%s ESMTP relay ready", c.srv.Hostname))
	for !c.quit {
		line, err := c.readCommand()
		if err != nil {
			c.readFailed(err)
			return
		}
		if line == nil {
			continue // overlong line, already answered
		}
		if c.commands++; c.commands > orDefault(c.srv.MaxCommands, DefaultMaxCommands) {
			c.writeReply(reply(421, "4.7.0", "%s Too many commands, closing connection", c.srv.Hostname))
			break
		}
		c.dispatch(string(line))
		if c.errors >= orDefault(c.srv.MaxErrors, DefaultMaxErrors) {
			c.writeReply(reply(421, "4.7.0", "%s Too many errors, closing connection", c.srv.Hostname))
			break
		}
	}
	c.bw.Flush()
}

// readFailed answers the end of a read that did not yield a command.
func (c *conn) readFailed(err error) {
	// The last words get a few seconds of their own: the session's write
	// deadline may be what just passed.
	c.raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
	var ne net.Error
	switch {
	case errors.Is(err, accept.ErrEvicted) || c.evicted() && errors.Is(err, os.ErrDeadlineExceeded):
		c.writeReply(reply(421, "4.7.0", "%s closing idle session, server busy", c.srv.Hostname))
	case c.dr.Stopped(err):
		c.writeReply(reply(421, "4.3.2", "%s Service shutting down, try again later", c.srv.Hostname))
	case errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(c.sessionEnd):
		c.writeReply(reply(421, "4.4.2", "%s Session time limit exceeded, closing connection", c.srv.Hostname))
	case errors.As(err, &ne) && ne.Timeout():
		c.writeReply(reply(421, "4.4.2", "%s Timeout exceeded, closing connection", c.srv.Hostname))
	case errors.Is(err, io.EOF):
		return
	default:
		c.log.Debug("smtpd: read", "err", err)
		return
	}
	c.bw.Flush()
}

// readCommand returns the next command line without its line ending, or
// nil after answering a line longer than the limit. Replies are flushed
// only when the client has nothing more in flight (RFC 2920): a pipelined
// group gets all its replies in one write.
func (c *conn) readCommand() ([]byte, error) {
	if c.br.Buffered() == 0 {
		if err := c.bw.Flush(); err != nil {
			return nil, err
		}
		c.idleSince.Store(time.Now().UnixNano())
		c.dr.Idle.Store(true)
		defer func() {
			c.dr.Idle.Store(false)
			c.idleSince.Store(0)
		}()
	}
	line, tooLong, err := c.readLine(orDefault(c.srv.MaxLineLength, DefaultMaxLineLength))
	if err != nil {
		return nil, err
	}
	if tooLong {
		c.writeReply(reply(500, "5.5.2", "Line too long"))
		return nil, nil
	}
	return line, nil
}

// readLine reads one line of at most limit octets (line ending excluded).
// A longer line is read to its end and discarded, and tooLong is set.
// CRLF and, leniently, a bare LF end a command line; commands carry no
// message content, so leniency here cannot smuggle anything.
func (c *conn) readLine(limit int) (line []byte, tooLong bool, err error) {
	c.dr.Timeout = c.commandTimeout()
	for {
		frag, err := c.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			tooLong = true
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if tooLong {
			return nil, true, nil
		}
		frag = frag[:len(frag)-1]
		if n := len(frag); n > 0 && frag[n-1] == '\r' {
			frag = frag[:n-1]
		}
		if len(frag) > limit {
			return nil, true, nil
		}
		return frag, false, nil
	}
}

func (c *conn) writeReply(r Reply) {
	if r.Code >= 500 {
		c.errors++
	}
	if r.Code == 421 {
		c.quit = true // RFC 5321 §3.8: 421 closes the transmission channel
	}
	if r.Code >= 400 && c.srv.Metrics != nil {
		c.srv.Metrics.Refused(commandName(c.verb), r)
	}
	c.bw.WriteString(r.format())
}

func (c *conn) dispatch(line string) {
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	c.verb = verb
	if strings.ContainsAny(line, "\r\x00") {
		c.writeReply(reply(501, "5.5.2", "Syntax error: control characters in command"))
		return
	}
	switch verb {
	case "EHLO", "HELO":
		c.hello(verb == "EHLO", strings.TrimSpace(arg))
	case "MAIL":
		c.mail(arg)
	case "RCPT":
		c.rcpt(arg)
	case "DATA":
		c.data(arg)
	case "BDAT":
		c.bdatCmd(arg)
	case "RSET":
		if arg != "" {
			c.writeReply(reply(501, "5.5.4", "Syntax: RSET"))
			return
		}
		c.reset()
		c.writeReply(reply(250, "2.0.0", "OK"))
	case "NOOP":
		c.writeReply(reply(250, "2.0.0", "OK"))
	case "QUIT":
		c.writeReply(reply(221, "2.0.0", "%s Bye", c.srv.Hostname))
		c.quit = true
	case "VRFY":
		if strings.TrimSpace(arg) == "" {
			c.writeReply(reply(501, "5.5.4", "Syntax: VRFY address"))
			return
		}
		c.writeReply(reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"))
	case "EXPN":
		c.writeReply(reply(502, "5.5.1", "EXPN not available"))
	case "HELP":
		c.writeReply(reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH"))
	case "STARTTLS":
		c.startTLS(arg)
	case "AUTH":
		c.auth(arg)
	default:
		c.writeReply(reply(500, "5.5.1", "Command unrecognized"))
	}
}

// reset abandons the transaction, keeping the greeting and authentication.
func (c *conn) reset() {
	if c.bdat != nil {
		c.bdat.abort(errBDATAborted)
	}
	if c.mailFrom != nil || c.bdat != nil {
		c.sess.Reset()
	}
	c.mailFrom = nil
	c.mailParams = envelope.MailParams{}
	c.rcpts = 0
	c.rcptTried = false
	c.bdat = nil
}

// maxHelloName is the longest EHLO/HELO argument: a domain has at most
// 255 octets (RFC 5321 §4.5.3.1.2), and an address literal fewer.
const maxHelloName = 255

func (c *conn) hello(esmtp bool, arg string) {
	name, _, _ := strings.Cut(arg, " ")
	if name == "" {
		if esmtp {
			c.writeReply(reply(501, "5.5.4", "Syntax: EHLO hostname"))
		} else {
			c.writeReply(reply(501, "5.5.4", "Syntax: HELO hostname"))
		}
		return
	}
	if len(name) > maxHelloName {
		// It goes into the Received field: a name no domain can have
		// would make that line longer than mail allows.
		c.writeReply(reply(501, "5.5.2", "Host name too long: at most %d octets (RFC 5321 §4.5.3.1.2)", maxHelloName))
		return
	}
	c.reset()
	if err := c.sess.Hello(HelloInfo{Name: name, ESMTP: esmtp, TLS: c.tls}); err != nil {
		c.writeReply(errorReply(err))
		return
	}
	c.helo, c.esmtp = name, esmtp
	if !esmtp {
		c.writeReply(reply(250, "", "%s", c.srv.Hostname))
		return
	}
	ext := []string{
		c.srv.Hostname,
		"PIPELINING",
		"SIZE " + strconv.FormatInt(orDefault(c.srv.MaxMessageSize, DefaultMaxMessageSize), 10),
		"8BITMIME",
		"SMTPUTF8",
		"ENHANCEDSTATUSCODES",
		"DSN",
		"CHUNKING",
		"MT-PRIORITY", // RFC 6710; the Backend decides whom to believe
		"DELIVERBY",   // RFC 2852, no minimum by-time
	}
	if c.srv.TLSConfig != nil && c.tls == nil {
		ext = append(ext, "STARTTLS")
	}
	if c.tls != nil {
		// RFC 8689 §4: offered only inside TLS, since the promise it
		// asks for means nothing on a session that is itself in clear.
		ext = append(ext, "REQUIRETLS")
	}
	if c.authAllowed() {
		ext = append(ext, "AUTH PLAIN LOGIN")
	}
	c.writeReply(Reply{Code: 250, Text: strings.Join(ext, "\n")})
}

func (c *conn) authAllowed() bool {
	return c.srv.EnableAuth && (c.tls != nil || c.srv.AllowInsecureAuth ||
		(c.srv.LoopbackIsSecure && accept.Loopback(c.raw.RemoteAddr())))
}

// paramReply maps an envelope parameter error to its reply.
func paramReply(err error) Reply {
	switch {
	case errors.Is(err, envelope.ErrParamUnknown):
		return reply(555, "5.5.4", "%s", trimErr(err))
	default:
		return reply(501, "5.5.4", "%s", trimErr(err))
	}
}

// pathReply maps an envelope path error to its reply; badAddr is 5.1.7 for
// the sender and 5.1.3 for a recipient (RFC 3463).
func pathReply(err error, badAddr string) Reply {
	if errors.Is(err, envelope.ErrNeedUTF8) {
		return reply(553, "5.6.7", "%s", trimErr(err))
	}
	return reply(501, badAddr, "%s", trimErr(err))
}

// trimErr drops the package prefix from an envelope error for the reply.
func trimErr(err error) string {
	return strings.TrimPrefix(err.Error(), "envelope: ")
}

// cutPrefixFold reports whether s starts with prefix (ASCII case-insensitive)
// and returns the rest.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

func (c *conn) mail(arg string) {
	switch {
	case c.helo == "":
		c.writeReply(reply(503, "5.5.1", "Send EHLO or HELO first"))
		return
	case c.mailFrom != nil:
		c.writeReply(reply(503, "5.5.1", "Nested MAIL command"))
		return
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		c.writeReply(reply(501, "5.5.2", "Syntax: MAIL FROM:<address>"))
		return
	}
	pathText, paramText, err := envelope.SplitArg(rest)
	if err != nil {
		c.writeReply(pathReply(err, "5.1.7"))
		return
	}
	if paramText != "" && !c.esmtp {
		c.writeReply(reply(555, "5.5.4", "MAIL parameters need EHLO"))
		return
	}
	params, err := envelope.ParseMailParams(paramText)
	if err != nil {
		c.writeReply(paramReply(err))
		return
	}
	if params.Body == envelope.BodyBinaryMIME {
		c.writeReply(reply(555, "5.5.4", "BODY=BINARYMIME not supported"))
		return
	}
	if params.RequireTLS && c.tls == nil {
		c.writeReply(reply(530, "5.7.10", "REQUIRETLS needs a TLS session"))
		return
	}
	if params.ByMode == envelope.ByReturn && params.ByTime <= 0 {
		// RFC 2852 §4.1: with R the deadline must still be ahead; the
		// message has no time left to be delivered in.
		c.writeReply(reply(501, "5.5.4", "BY=%d;R: the delivery time has already expired", params.ByTime))
		return
	}
	if max := orDefault(c.srv.MaxMessageSize, DefaultMaxMessageSize); params.Size > max {
		c.writeReply(reply(552, "5.3.4", "Message size exceeds fixed limit of %d bytes", max))
		return
	}
	from, err := envelope.ParseReversePath(pathText, params.SMTPUTF8)
	if err != nil {
		c.writeReply(pathReply(err, "5.1.7"))
		return
	}
	if err := c.sess.Mail(from, params); err != nil {
		c.writeReply(errorReply(err))
		return
	}
	c.mailFrom, c.mailParams = &from, params
	c.writeReply(reply(250, "2.1.0", "Sender OK"))
}

func (c *conn) rcpt(arg string) {
	if c.mailFrom == nil {
		c.writeReply(reply(503, "5.5.1", "Need MAIL before RCPT"))
		return
	}
	if c.bdat != nil {
		c.writeReply(reply(503, "5.5.1", "RCPT not allowed during BDAT"))
		return
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		c.writeReply(reply(501, "5.5.2", "Syntax: RCPT TO:<address>"))
		return
	}
	c.rcptTried = true
	if c.rcpts >= orDefault(c.srv.MaxRecipients, DefaultMaxRecipients) {
		c.writeReply(reply(452, "4.5.3", "Too many recipients"))
		return
	}
	if c.sessionRcpts >= orDefault(c.srv.MaxSessionRcpts, DefaultMaxSessionRcpt) {
		c.writeReply(reply(452, "4.5.3", "Too many recipients in this session"))
		return
	}
	pathText, paramText, err := envelope.SplitArg(rest)
	if err != nil {
		c.writeReply(pathReply(err, "5.1.3"))
		return
	}
	if paramText != "" && !c.esmtp {
		c.writeReply(reply(555, "5.5.4", "RCPT parameters need EHLO"))
		return
	}
	params, err := envelope.ParseRcptParams(paramText)
	if err != nil {
		c.writeReply(paramReply(err))
		return
	}
	to, err := envelope.ParseForwardPath(pathText, c.mailParams.SMTPUTF8)
	if err != nil {
		c.writeReply(pathReply(err, "5.1.3"))
		return
	}
	if err := c.sess.Rcpt(to, params); err != nil {
		r := errorReply(err)
		if r.Code >= 500 {
			c.tarpit()
		}
		c.writeReply(r)
		return
	}
	c.rcpts++
	c.sessionRcpts++
	c.writeReply(reply(250, "2.1.5", "Recipient OK"))
}

// tarpit slows the answers to a client that keeps naming recipients that
// are refused: harvesting addresses (or probing for an open relay) gets
// slower with every miss, honest clients that mistype once never notice.
func (c *conn) tarpit() {
	c.rcptMisses++
	after := orDefault(c.srv.TarpitAfter, DefaultTarpitAfter)
	if c.srv.TarpitAfter < 0 || c.rcptMisses <= after {
		return
	}
	d := min(time.Duration(c.rcptMisses-after)*orDefault(c.srv.TarpitDelay, DefaultTarpitDelay), maxTarpit)
	c.bw.Flush() // what was answered before is not held back
	time.Sleep(d)
}

// checkReadyForData answers a DATA or first BDAT that cannot start a
// message and reports whether the transaction may go on.
func (c *conn) checkReadyForData() bool {
	switch {
	case c.mailFrom == nil:
		c.writeReply(reply(503, "5.5.1", "Need MAIL command"))
	case c.rcpts == 0 && c.rcptTried:
		c.writeReply(reply(554, "5.5.1", "No valid recipients"))
	case c.rcpts == 0:
		c.writeReply(reply(503, "5.5.1", "Need RCPT command"))
	default:
		return true
	}
	return false
}

func (c *conn) data(arg string) {
	if arg != "" {
		c.writeReply(reply(501, "5.5.4", "Syntax: DATA"))
		return
	}
	if c.bdat != nil {
		c.writeReply(reply(503, "5.5.1", "DATA not allowed after BDAT"))
		return
	}
	if !c.checkReadyForData() {
		return
	}
	c.writeReply(reply(354, "", "Start mail input; end with <CRLF>.<CRLF>"))
	c.bw.Flush()
	c.dr.Timeout = orDefault(c.srv.DataTimeout, DefaultDataTimeout)
	d := newDotReader(c.br, orDefault(c.srv.MaxMessageSize, DefaultMaxMessageSize))
	id, err := c.sess.Data(d)
	end := time.Now()
	refusal, rerr := d.drain()
	if rerr != nil {
		// The connection is gone or silent mid-message; nothing was
		// accepted (Data saw the same error and stored nothing).
		c.readFailed(rerr)
		c.quit = true
		c.reset()
		return
	}
	c.finishMessage(id, err, refusal, end)
}

// finishMessage answers the end of a message: its refusal by the checks
// of this package, else the Backend's verdict. end is when the Backend
// was given the last of the message.
func (c *conn) finishMessage(id string, err error, refusal *smtp.SMTPError, end time.Time) {
	defer c.reset()
	switch {
	case refusal != nil:
		c.writeReply(errorReply(refusal))
		return
	case err != nil:
		c.writeReply(errorReply(err))
		return
	case id == "":
		// A Session that stopped reading early must say why.
		c.writeReply(errorReply(errIncomplete))
		return
	}
	if c.srv.Metrics != nil {
		c.srv.Metrics.Accepted(time.Since(end))
	}
	c.writeReply(reply(250, "2.0.0", "OK: queued as %s", id))
}

func (c *conn) startTLS(arg string) {
	switch {
	case c.srv.TLSConfig == nil:
		c.writeReply(reply(502, "5.5.1", "STARTTLS not available"))
		return
	case c.tls != nil:
		c.writeReply(reply(503, "5.5.1", "TLS already active"))
		return
	case arg != "":
		c.writeReply(reply(501, "5.5.4", "Syntax: STARTTLS"))
		return
	case c.mailFrom != nil:
		c.writeReply(reply(503, "5.5.1", "STARTTLS not allowed during a mail transaction"))
		return
	}
	c.writeReply(reply(220, "2.0.0", "Ready to start TLS"))
	if err := c.bw.Flush(); err != nil {
		c.quit = true
		return
	}
	if n := c.br.Buffered(); n > 0 {
		// Plaintext pipelined after STARTTLS (CVE-2011-0411 class): it must
		// never be read as if it came through TLS.
		c.log.Warn("smtpd: discarding plaintext sent after STARTTLS", "bytes", n)
	}
	tc := tls.Server(c.nc, c.srv.TLSConfig)
	tc.SetDeadline(time.Now().Add(orDefault(c.srv.CommandTimeout, DefaultCommandTimeout)))
	if err := tc.Handshake(); err != nil {
		c.log.Info("smtpd: STARTTLS handshake failed", "err", err)
		c.quit = true
		return
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	// RFC 3207 §4.2: discard all knowledge obtained from the client.
	c.reset()
	c.nc, c.tls, c.dr.Src = tc, &st, tc
	c.helo, c.esmtp, c.authUser = "", false, ""
	c.br.Reset(&c.dr)
	c.bw.Reset(tc)
}
