package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/relay-mta/relay/envelope"
)

// SubmitOptions say how to reach the server.
type SubmitOptions struct {
	Addr string // host:port
	// TLS is implicit TLS from the first byte (RFC 8314: a submissions
	// or listen_tls port); StartTLS requires STARTTLS before anything
	// else is sent. TLSConfig (nil: verify against the system roots, for
	// the host of Addr) checks the server in both cases.
	TLS, StartTLS bool
	TLSConfig     *tls.Config
	// Username and Password, when Username is set, authenticate with AUTH
	// PLAIN after TLS.
	Username, Password string
	// LocalName is the EHLO name; "" means "localhost".
	LocalName string
	// Timeout bounds connecting and each command; 0 means one minute.
	Timeout time.Duration
	// RequireTLS sends REQUIRETLS with MAIL FROM (RFC 8689): the message
	// must then travel only over verified TLS to hops that promise the
	// same, or come back as undeliverable. It needs a TLS session to a
	// server that offers REQUIRETLS; without one nothing is sent.
	RequireTLS bool
}

// RecipientError is a recipient the server refused at RCPT.
type RecipientError struct {
	Rcpt string // in wire form, "<u@d>"
	Err  error  // the server's reply, an *smtp.SMTPError
}

func (e *RecipientError) Error() string {
	return fmt.Sprintf("recipient %s refused: %s", e.Rcpt, replyText(e.Err))
}

func (e *RecipientError) Unwrap() error { return e.Err }

// ReplyError is a refusal at another step (connection, AUTH, MAIL, DATA).
type ReplyError struct {
	Step string // "greeting", "STARTTLS", "AUTH", "MAIL FROM", "DATA", ...
	Err  error
}

func (e *ReplyError) Error() string {
	return fmt.Sprintf("%s refused: %s", e.Step, replyText(e.Err))
}

func (e *ReplyError) Unwrap() error { return e.Err }

// replyText renders an SMTP error as the server said it: code, enhanced
// code and text, on one line.
func replyText(err error) string {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return err.Error()
	}
	s := fmt.Sprintf("%d", se.Code)
	if se.EnhancedCode != smtp.NoEnhancedCode && se.EnhancedCode != smtp.EnhancedCodeNotSet {
		s += fmt.Sprintf(" %d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return s + " " + strings.Join(strings.Fields(se.Message), " ")
}

// queuedAs finds the queue ID in a 250 reply to DATA: "queued as ID" is
// what this relay and Postfix say.
var queuedAs = regexp.MustCompile(`(?i)queued as ([^\s;,]+)`)

// Submit sends msg from the reverse path from to rcpts over one SMTP
// session and returns the text of the server's final 250 reply and the
// queue ID in it ("" when the server names none). Every recipient must be
// accepted: the first refusal aborts the transaction with a
// *RecipientError, so that nothing is sent to a partial list.
func Submit(ctx context.Context, o SubmitOptions, from envelope.Path, rcpts []envelope.Path, msg []byte) (reply, queueID string, err error) {
	if len(rcpts) == 0 {
		return "", "", errors.New("no recipients")
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	if o.TLS && o.StartTLS {
		return "", "", errors.New("implicit TLS and STARTTLS do not go together")
	}
	cfg := o.TLSConfig
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName, _, _ = net.SplitHostPort(o.Addr)
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return "", "", fmt.Errorf("connect to %s: %w", o.Addr, err)
	}
	if o.TLS {
		tc := tls.Client(conn, cfg)
		tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return "", "", fmt.Errorf("TLS with %s: %w", o.Addr, err)
		}
		tc.SetDeadline(time.Time{})
		conn = tc
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var c *smtp.Client
	if o.StartTLS {
		// go-smtp says EHLO and STARTTLS here, before its timeouts can be
		// set: a deadline on the connection bounds that step.
		conn.SetDeadline(time.Now().Add(timeout))
		if c, err = smtp.NewClientStartTLS(conn, cfg); err != nil {
			conn.Close()
			return "", "", &ReplyError{Step: "STARTTLS", Err: err}
		}
		conn.SetDeadline(time.Time{})
	} else {
		c = smtp.NewClient(conn)
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = timeout, 2*timeout
	local := o.LocalName
	if local == "" {
		local = "localhost"
	}
	if err := c.Hello(local); err != nil {
		return "", "", &ReplyError{Step: "EHLO", Err: err}
	}
	if o.Username != "" {
		if ok, _ := c.Extension("AUTH"); !ok {
			if _, tlsOn := c.TLSConnectionState(); !tlsOn {
				return "", "", fmt.Errorf("%s offers no AUTH without TLS (try --starttls)", o.Addr)
			}
			return "", "", fmt.Errorf("%s offers no AUTH", o.Addr)
		}
		if err := c.Auth(sasl.NewPlainClient("", o.Username, o.Password)); err != nil {
			return "", "", &ReplyError{Step: "AUTH", Err: err}
		}
	}
	if o.RequireTLS {
		if _, tlsOn := c.TLSConnectionState(); !tlsOn {
			return "", "", fmt.Errorf("REQUIRETLS needs a TLS session to %s (try --starttls)", o.Addr)
		}
		if ok, _ := c.Extension("REQUIRETLS"); !ok {
			return "", "", fmt.Errorf("%s does not offer REQUIRETLS", o.Addr)
		}
	}
	mopts := &smtp.MailOptions{UTF8: from.NeedsUTF8(), RequireTLS: o.RequireTLS}
	for _, r := range rcpts {
		mopts.UTF8 = mopts.UTF8 || r.NeedsUTF8()
	}
	// go-smtp puts the angle brackets around what it is given and does no
	// validation of its own: the paths were parsed by package envelope, and
	// their wire form goes without the brackets.
	if err := c.Mail(strings.Trim(from.String(), "<>"), mopts); err != nil {
		return "", "", &ReplyError{Step: "MAIL FROM " + from.String(), Err: err}
	}
	for _, r := range rcpts {
		if err := c.Rcpt(strings.Trim(r.String(), "<>"), nil); err != nil {
			return "", "", &RecipientError{Rcpt: r.String(), Err: err}
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", "", &ReplyError{Step: "DATA", Err: err}
	}
	if _, err := w.Write(msg); err != nil {
		return "", "", fmt.Errorf("sending message: %w", err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", "", &ReplyError{Step: "message", Err: err}
	}
	c.Quit()
	if m := queuedAs.FindStringSubmatch(resp.StatusText); m != nil {
		queueID = m[1]
	}
	return resp.StatusText, queueID, nil
}
