package smtpd

import (
	"encoding/base64"
	"errors"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// errAuthCancelled is returned by the exchange when the client sends "*".
var errAuthCancelled = errors.New("smtpd: authentication cancelled")

func (c *conn) auth(arg string) {
	switch {
	case c.helo == "" || !c.esmtp:
		c.writeReply(reply(503, "5.5.1", "Send EHLO first"))
		return
	case !c.srv.EnableAuth:
		c.writeReply(reply(502, "5.5.1", "AUTH not available"))
		return
	case !c.authAllowed():
		c.writeReply(reply(538, "5.7.11", "Encryption required for requested authentication mechanism"))
		return
	case c.authUser != "":
		c.writeReply(reply(503, "5.5.1", "Already authenticated"))
		return
	case c.mailFrom != nil:
		c.writeReply(reply(503, "5.5.1", "AUTH not allowed during a mail transaction"))
		return
	}
	mech, initial, hasInitial := strings.Cut(strings.TrimSpace(arg), " ")
	var (
		called  bool
		backErr error
		user    string
	)
	check := func(identity, username, password string) error {
		called, user = true, username
		backErr = c.sess.Auth(identity, username, password)
		return backErr
	}
	var srv sasl.Server
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		srv = sasl.NewPlainServer(check)
	case sasl.Login:
		srv = &loginServer{check: check}
	default:
		c.writeReply(reply(504, "5.5.4", "Unrecognized authentication mechanism"))
		return
	}
	var resp []byte
	if hasInitial {
		var err error
		if resp, err = decodeSASL(initial); err != nil {
			c.writeReply(reply(501, "5.5.2", "Invalid base64 in initial response"))
			return
		}
	}
	for {
		challenge, done, err := srv.Next(resp)
		switch {
		case err != nil && called:
			c.writeReply(authFailureReply(backErr))
			return
		case err != nil:
			c.writeReply(reply(501, "5.5.2", "Malformed authentication response"))
			return
		case done:
			c.authUser = user
			c.trusted.Store(true) // a privileged session from now on
			c.writeReply(reply(235, "2.7.0", "Authentication successful"))
			return
		}
		c.writeReply(Reply{Code: 334, Text: base64.StdEncoding.EncodeToString(challenge)})
		if err := c.bw.Flush(); err != nil {
			c.quit = true
			return
		}
		line, tooLong, err := c.readLine(maxAuthLineLength)
		if err != nil {
			c.readFailed(err)
			c.quit = true
			return
		}
		if tooLong {
			c.writeReply(reply(500, "5.5.6", "Authentication exchange line is too long"))
			return
		}
		if string(line) == "*" {
			c.writeReply(reply(501, "5.7.0", "Authentication cancelled"))
			return
		}
		if resp, err = decodeSASL(string(line)); err != nil {
			c.writeReply(reply(501, "5.5.2", "Invalid base64 in authentication response"))
			return
		}
	}
}

// ErrAuthTemporary, returned (or wrapped) by Session.Auth, says the
// credentials could not be checked: "454 4.7.0" instead of 535.
var ErrAuthTemporary = errors.New("smtpd: temporary authentication failure")

// authFailureReply answers a refusal from Session.Auth: an SMTP error as
// given, ErrAuthTemporary as 454, anything else as bad credentials.
func authFailureReply(err error) Reply {
	var se *smtp.SMTPError
	switch {
	case errors.As(err, &se):
		return errorReply(err)
	case errors.Is(err, ErrAuthTemporary):
		return reply(454, "4.7.0", "Temporary authentication failure")
	}
	return reply(535, "5.7.8", "Authentication credentials invalid")
}

// decodeSASL decodes a base64 SASL response; "=" is the empty response
// (RFC 4954 §4).
func decodeSASL(s string) ([]byte, error) {
	if s == "=" {
		return []byte{}, nil
	}
	return base64.StdEncoding.DecodeString(s)
}

// loginServer is the server side of the LOGIN mechanism (obsolete but still
// sent by many clients; go-sasl only has the client side). An initial
// response carries the user name.
type loginServer struct {
	check    func(identity, username, password string) error
	username []byte
	state    int // 0: want user, 1: want password, 2: done
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.state {
	case 0:
		if resp == nil {
			return []byte("Username:"), false, nil
		}
		l.username, l.state = resp, 1
		return []byte("Password:"), false, nil
	case 1:
		l.state = 2
		if err := l.check("", string(l.username), string(resp)); err != nil {
			return nil, true, err
		}
		return nil, true, nil
	}
	return nil, true, sasl.ErrUnexpectedClientResponse
}
