package pop3d

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/relay-mta/relay/relay/accept"
)

// Session states of RFC 1939 §3. UPDATE is not a state a command can be
// received in: it is what QUIT does in TRANSACTION.
type state int

const (
	stateAuthorization state = iota
	stateTransaction
)

// conn is the state of one POP3 connection.
type conn struct {
	srv *Server
	raw net.Conn // the accepted connection, for deadlines and Close
	nc  net.Conn // raw, or the TLS connection over it after STLS
	log *slog.Logger

	br *bufio.Reader
	bw *bufio.Writer
	dr accept.Reader // under br: deadlines, and the stop of idle reads
	dw deadlineWriter

	tls          *tls.ConnectionState
	state        state
	user         string // from USER, waiting for PASS
	authFailures int
	errors       int
	quit         bool

	// TRANSACTION state.
	drop    Maildrop
	msgs    []MessageInfo
	deleted []bool
}

// deadlineWriter bounds each write, so that a client that stops reading
// in the middle of a RETR does not hold its maildrop locked for ever.
type deadlineWriter struct{ c *conn }

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.c.raw.SetWriteDeadline(time.Now().Add(d.c.idleTimeout()))
	return d.c.nc.Write(p)
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, raw: nc, nc: nc}
	c.log = s.logger().With("client", nc.RemoteAddr().String())
	c.dr.Conn, c.dr.Src, c.dr.Group = nc, nc, &s.group
	c.dr.Timeout = c.idleTimeout()
	c.dw = deadlineWriter{c: c}
	c.br = bufio.NewReaderSize(&c.dr, 4096)
	c.bw = bufio.NewWriterSize(&c.dw, 32<<10)
	return c
}

func (c *conn) idleTimeout() time.Duration {
	return orDefault(c.srv.IdleTimeout, DefaultIdleTimeout)
}

// Abort implements accept.Session: it closes the connection at once.
func (c *conn) Abort() { c.raw.Close() }

// WakeIfIdle implements accept.Session: a session waiting for a command
// sees its read time out, and ends as the server is stopping.
func (c *conn) WakeIfIdle() { c.dr.WakeIfIdle() }

func (c *conn) serve(overLimit bool) {
	defer c.nc.Close()
	defer func() {
		if v := recover(); v != nil {
			c.log.Error("pop3d: panic serving connection", "panic", v, "stack", string(debug.Stack()))
			c.errReply("[SYS/TEMP] Internal error, closing connection")
			c.bw.Flush()
		}
		if c.drop != nil {
			c.drop.Close()
		}
	}()
	if overLimit {
		c.errReply("[SYS/TEMP] Too many connections, try again later")
		c.bw.Flush()
		return
	}
	if tc, ok := c.nc.(*tls.Conn); ok {
		tc.SetDeadline(time.Now().Add(c.idleTimeout()))
		if err := tc.Handshake(); err != nil {
			c.log.Info("pop3d: TLS handshake failed", "err", err)
			return
		}
		tc.SetDeadline(time.Time{})
		st := tc.ConnectionState()
		c.tls = &st
	}
	c.okReply("%s POP3 server ready", c.srv.Hostname)
	for !c.quit {
		line, err := c.readCommand()
		if err != nil {
			c.readFailed(err)
			return
		}
		if line != nil {
			c.dispatch(string(line))
		}
		if !c.quit && c.errors >= orDefault(c.srv.MaxErrors, DefaultMaxErrors) {
			c.errReply("Too many errors, closing connection")
			break
		}
	}
	c.bw.Flush()
}

// readFailed answers the end of a read that did not yield a command. The
// session ends without the UPDATE state: nothing marked is deleted.
func (c *conn) readFailed(err error) {
	var ne net.Error
	switch {
	case c.dr.Stopped(err):
		c.errReply("[SYS/TEMP] Server shutting down, try again later")
	case errors.As(err, &ne) && ne.Timeout():
		c.errReply("Autologout: idle for too long")
	default:
		if !errors.Is(err, io.EOF) {
			c.log.Debug("pop3d: read", "err", err)
		}
		return
	}
	c.bw.Flush()
}

// readCommand returns the next command line without its line ending, or
// nil after answering a line longer than the limit. Responses are flushed
// only when the client has nothing more in flight, so a pipelined group
// of commands (RFC 2449 PIPELINING) gets its responses in one write.
func (c *conn) readCommand() ([]byte, error) {
	if c.br.Buffered() == 0 {
		if err := c.bw.Flush(); err != nil {
			return nil, err
		}
		c.dr.Idle.Store(true)
		defer c.dr.Idle.Store(false)
	}
	limit := orDefault(c.srv.MaxLineLength, DefaultMaxLineLength)
	tooLong := false
	for {
		frag, err := c.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			tooLong = true
			continue
		}
		if err != nil {
			return nil, err
		}
		// CRLF ends a command; a bare LF is accepted too, since a command
		// line carries no message data that leniency could corrupt.
		line := frag[:len(frag)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if tooLong || len(line) > limit {
			c.errReply("Command line too long")
			return nil, nil
		}
		return line, nil
	}
}

// okReply and errReply write a one-line response. CR and LF never reach
// the wire from the text, so a message from a Backend cannot forge a
// response of its own.
func (c *conn) okReply(format string, args ...any) {
	c.writeStatus("+OK", fmt.Sprintf(format, args...))
}

// errReply answers a command that is malformed or not valid in the
// current state; MaxErrors of them end the session.
func (c *conn) errReply(format string, args ...any) {
	c.errors++
	c.writeStatus("-ERR", fmt.Sprintf(format, args...))
}

// failReply answers a valid command that could not be carried out (no
// such message, mailbox in use, storage trouble); it is no client error.
func (c *conn) failReply(format string, args ...any) {
	c.writeStatus("-ERR", fmt.Sprintf(format, args...))
}

func (c *conn) writeStatus(status, text string) {
	text = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, text)
	c.bw.WriteString(status)
	if text != "" {
		c.bw.WriteByte(' ')
		c.bw.WriteString(text)
	}
	c.bw.WriteString("\r\n")
}

func (c *conn) dispatch(line string) {
	cmd, err := parseCommand(line)
	if err != nil {
		c.errReply("%s", err.Error())
		return
	}
	switch cmd.Verb {
	case "CAPA":
		c.capa(cmd)
		return
	case "QUIT":
		if len(cmd.Args) != 0 {
			c.errReply("Syntax: QUIT")
			return
		}
		c.quitCmd()
		return
	}
	if c.state == stateAuthorization {
		switch cmd.Verb {
		case "USER":
			c.userCmd(cmd)
		case "PASS":
			c.passCmd(cmd)
		case "STLS":
			c.stls(cmd)
		case "APOP", "AUTH":
			c.errReply("%s not supported; use USER and PASS", cmd.Verb)
		case "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP":
			c.errReply("%s needs a login first (USER and PASS)", cmd.Verb)
		default:
			c.errReply("unknown command")
		}
		return
	}
	switch cmd.Verb {
	case "STAT":
		c.stat(cmd)
	case "LIST", "UIDL":
		c.list(cmd)
	case "RETR":
		c.retr(cmd)
	case "TOP":
		c.top(cmd)
	case "DELE":
		c.dele(cmd)
	case "RSET":
		c.rset(cmd)
	case "NOOP":
		if len(cmd.Args) != 0 {
			c.errReply("Syntax: NOOP")
			return
		}
		c.okReply("")
	case "USER", "PASS", "APOP", "AUTH", "STLS":
		c.errReply("Already logged in")
	default:
		c.errReply("unknown command")
	}
}

// authAllowed reports whether USER and PASS may be used now.
func (c *conn) authAllowed() bool {
	return c.tls != nil || c.srv.AllowInsecureAuth || (c.srv.LoopbackIsSecure && accept.Loopback(c.raw.RemoteAddr()))
}

func (c *conn) capa(cmd command) {
	if len(cmd.Args) != 0 {
		c.errReply("Syntax: CAPA")
		return
	}
	c.okReply("Capability list follows")
	caps := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"}
	if c.state == stateAuthorization {
		// RFC 2595 §4: USER is advertised only when it would be accepted.
		if c.authAllowed() {
			caps = append(caps, "USER")
		}
		if c.srv.TLSConfig != nil && c.tls == nil {
			caps = append(caps, "STLS")
		}
	}
	caps = append(caps, "IMPLEMENTATION relay")
	for _, s := range caps {
		c.bw.WriteString(s + "\r\n")
	}
	c.bw.WriteString(".\r\n")
}

func (c *conn) stls(cmd command) {
	switch {
	case len(cmd.Args) != 0:
		c.errReply("Syntax: STLS")
		return
	case c.srv.TLSConfig == nil:
		c.errReply("STLS not available")
		return
	case c.tls != nil:
		c.errReply("TLS already active")
		return
	}
	c.okReply("Begin TLS negotiation")
	if err := c.bw.Flush(); err != nil {
		c.quit = true
		return
	}
	if n := c.br.Buffered(); n > 0 {
		// Plaintext pipelined after STLS (the CVE-2011-0411 class of
		// injection) must never be read as if it came through TLS.
		c.log.Warn("pop3d: discarding plaintext sent after STLS", "bytes", n)
	}
	tc := tls.Server(c.raw, c.srv.TLSConfig)
	tc.SetDeadline(time.Now().Add(c.idleTimeout()))
	if err := tc.Handshake(); err != nil {
		c.log.Info("pop3d: STLS handshake failed", "err", err)
		c.quit = true
		return
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	// Nothing learnt before TLS carries over (RFC 2595 §4): a USER sent in
	// the clear is forgotten.
	c.nc, c.tls, c.user, c.dr.Src = tc, &st, "", tc
	c.br.Reset(&c.dr)
	c.bw.Reset(&c.dw)
}

func (c *conn) userCmd(cmd command) {
	if !c.authAllowed() {
		// Refused at USER, before the client sends its password.
		c.errReply("[AUTH] Plaintext login is not allowed without TLS; use STLS first")
		return
	}
	if len(cmd.Args) != 1 {
		c.errReply("Syntax: USER name")
		return
	}
	c.user = cmd.Args[0]
	c.okReply("Send PASS")
}

func (c *conn) passCmd(cmd command) {
	switch {
	case !c.authAllowed():
		c.errReply("[AUTH] Plaintext login is not allowed without TLS; use STLS first")
		return
	case c.user == "":
		c.errReply("Send USER first")
		return
	case cmd.Rest == "":
		c.errReply("Syntax: PASS password")
		return
	}
	user := c.user
	c.user = "" // a failed PASS starts over with USER (RFC 1939 §7)
	info := ConnInfo{RemoteAddr: c.raw.RemoteAddr(), LocalAddr: c.raw.LocalAddr(), TLS: c.tls}
	drop, err := c.srv.Backend.Login(info, user, cmd.Rest)
	switch {
	case errors.Is(err, ErrAuthFailed):
		c.loginFailed(user)
		return
	case errors.Is(err, ErrBlocked):
		c.log.Info("pop3d: login refused: address blocked", "user", user)
		reason := "Too many failed logins from your address: temporarily blocked, try again later"
		if be := (*BlockedError)(nil); errors.As(err, &be) && be.Reason != "" {
			reason = be.Reason
		}
		c.failReply("[SYS/TEMP] %s", reason)
		c.quit = true
		return
	case errors.Is(err, ErrInUse):
		c.log.Info("pop3d: maildrop in use", "user", user)
		c.failReply("[IN-USE] Mailbox is locked by another POP3 session")
		return
	case err != nil:
		c.log.Error("pop3d: login", "user", user, "err", err)
		c.failReply("[SYS/TEMP] Mailbox unavailable, try again later")
		return
	case drop == nil:
		c.log.Error("pop3d: login returned no maildrop", "user", user)
		c.failReply("[SYS/TEMP] Mailbox unavailable, try again later")
		return
	}
	msgs, err := drop.Messages()
	if err != nil {
		drop.Close()
		c.log.Error("pop3d: list maildrop", "user", user, "err", err)
		c.failReply("[SYS/TEMP] Mailbox unavailable, try again later")
		return
	}
	c.srv.authSucceeded(remoteIP(c.raw.RemoteAddr()))
	c.drop, c.msgs, c.deleted = drop, msgs, make([]bool, len(msgs))
	c.state = stateTransaction
	c.errors = 0 // mistakes while logging in do not count against the session
	n, size := c.totals()
	c.log.Info("pop3d: login", "user", user, "messages", n, "size", size)
	c.okReply("Logged in, %d messages (%d octets)", n, size)
}

// loginFailed answers a wrong user name or password, slower each time,
// and hangs up after too many.
func (c *conn) loginFailed(user string) {
	c.authFailures++
	c.log.Info("pop3d: login failed", "user", user, "failures", c.authFailures)
	delay := c.srv.authDelay(remoteIP(c.raw.RemoteAddr()), time.Now())
	c.bw.Flush()
	t := time.NewTimer(delay)
	select {
	case <-t.C:
	case <-c.srv.group.Stopped():
		t.Stop()
	}
	if c.authFailures >= orDefault(c.srv.MaxAuthFailures, DefaultMaxAuthFailures) {
		c.failReply("[AUTH] Invalid user name or password; too many failures, closing connection")
		c.quit = true
		return
	}
	c.failReply("[AUTH] Invalid user name or password")
}

// totals counts the messages not marked as deleted and their octets.
func (c *conn) totals() (n int, size int64) {
	for i, m := range c.msgs {
		if !c.deleted[i] {
			n++
			size += m.Size
		}
	}
	return n, size
}

// msgArg parses a message-number argument and checks that it names a
// message that is not marked as deleted; it answers -ERR and returns -1
// when not. The result is an index into c.msgs.
func (c *conn) msgArg(arg string) int {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 || !isDigits(arg) {
		c.errReply("Invalid message number %q", arg)
		return -1
	}
	if n > len(c.msgs) {
		c.failReply("No such message: there are %d messages", len(c.msgs))
		return -1
	}
	if c.deleted[n-1] {
		c.failReply("Message %d is deleted", n)
		return -1
	}
	return n - 1
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func (c *conn) stat(cmd command) {
	if len(cmd.Args) != 0 {
		c.errReply("Syntax: STAT")
		return
	}
	n, size := c.totals()
	c.okReply("%d %d", n, size)
}

// list answers LIST and UIDL, with or without a message number.
func (c *conn) list(cmd command) {
	field := func(m MessageInfo) string {
		if cmd.Verb == "UIDL" {
			return m.UID
		}
		return strconv.FormatInt(m.Size, 10)
	}
	switch len(cmd.Args) {
	case 0:
		n, size := c.totals()
		if cmd.Verb == "UIDL" {
			c.okReply("Unique-ID listing follows")
		} else {
			c.okReply("%d messages (%d octets)", n, size)
		}
		for i, m := range c.msgs {
			if !c.deleted[i] {
				fmt.Fprintf(c.bw, "%d %s\r\n", i+1, field(m))
			}
		}
		c.bw.WriteString(".\r\n")
	case 1:
		if i := c.msgArg(cmd.Args[0]); i >= 0 {
			c.okReply("%d %s", i+1, field(c.msgs[i]))
		}
	default:
		c.errReply("Syntax: %s [message]", cmd.Verb)
	}
}

// send opens message i and sends it as the response to RETR (bodyLines
// < 0) or TOP, streamed from the Backend. A failure to open it is -ERR; a
// failure while sending ends the session, since a partial response cannot
// be taken back.
func (c *conn) send(i, bodyLines int, ok string) {
	r, err := c.drop.Message(i)
	if err != nil {
		c.log.Error("pop3d: read message", "uid", c.msgs[i].UID, "err", err)
		c.failReply("[SYS/TEMP] Cannot read message %d, try again later", i+1)
		return
	}
	defer r.Close()
	c.okReply("%s", ok)
	if err := writeDotStuffed(c.bw, r, bodyLines); err != nil {
		c.log.Error("pop3d: read message", "uid", c.msgs[i].UID, "err", err)
		c.quit = true
	}
}

func (c *conn) retr(cmd command) {
	if len(cmd.Args) != 1 {
		c.errReply("Syntax: RETR message")
		return
	}
	i := c.msgArg(cmd.Args[0])
	if i < 0 {
		return
	}
	c.send(i, -1, fmt.Sprintf("%d octets", c.msgs[i].Size))
}

func (c *conn) top(cmd command) {
	if len(cmd.Args) != 2 {
		c.errReply("Syntax: TOP message lines")
		return
	}
	i := c.msgArg(cmd.Args[0])
	if i < 0 {
		return
	}
	lines, err := strconv.Atoi(cmd.Args[1])
	if err != nil || lines < 0 || !isDigits(cmd.Args[1]) {
		c.errReply("Invalid number of lines %q", cmd.Args[1])
		return
	}
	c.send(i, lines, fmt.Sprintf("Top of message %d follows", i+1))
}

func (c *conn) dele(cmd command) {
	if len(cmd.Args) != 1 {
		c.errReply("Syntax: DELE message")
		return
	}
	if i := c.msgArg(cmd.Args[0]); i >= 0 {
		c.deleted[i] = true
		c.okReply("Message %d marked for deletion at QUIT", i+1)
	}
}

func (c *conn) rset(cmd command) {
	if len(cmd.Args) != 0 {
		c.errReply("Syntax: RSET")
		return
	}
	clear(c.deleted)
	n, size := c.totals()
	c.okReply("%d messages (%d octets)", n, size)
}

// quitCmd ends the session; in the TRANSACTION state it is the UPDATE
// state: every marked message is removed in one Backend call.
func (c *conn) quitCmd() {
	c.quit = true
	if c.state != stateTransaction {
		c.okReply("%s POP3 server signing off", c.srv.Hostname)
		return
	}
	var del []int
	for i, d := range c.deleted {
		if d {
			del = append(del, i)
		}
	}
	if len(del) > 0 {
		if err := c.drop.Delete(del); err != nil {
			c.log.Error("pop3d: delete at QUIT", "messages", len(del), "err", err)
			c.failReply("[SYS/TEMP] Marked messages were not deleted, try again later")
			return
		}
	}
	n, _ := c.totals()
	c.log.Info("pop3d: logout", "deleted", len(del), "left", n)
	c.okReply("%s POP3 server signing off (%d messages left)", c.srv.Hostname, n)
}
