package deliver

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/relay-mta/relay/queue"
)

// This file is the login at a smarthost (RFC 4954): AUTH PLAIN (RFC 4616)
// or, when the server offers only that, LOGIN (draft-murchison-sasl-login),
// and only over TLS whose certificate verified.
//
// The exchange is written here rather than with go-smtp's Client.Auth and
// go-sasl: after a final refusal (535) Client.Auth sends "*" as if a
// challenge were still open, which the server reads as an unknown command;
// and go-sasl's LOGIN client sends the user name as an initial response,
// which servers that follow the draft refuse. Both mechanisms are a few
// lines of base64.

// auth logs in as a on s, whose opening exchange is done. An error of a
// refused login satisfies refusedLogin and carries the server's reply.
func (s *clientSession) auth(a *queue.Auth) error {
	if s.tls == nil || !s.verified {
		// Dial allows AUTH only with tls = require or implicit, which
		// verify: this is a second lock on the same door.
		return fmt.Errorf("deliver: %s: AUTH refused locally: no verified TLS session", s.remote)
	}
	mechs := s.authMechanisms()
	var lines []string
	var steps []string // what each 334 is answered with, after the first line
	switch {
	case mechs["PLAIN"]:
		resp := base64.StdEncoding.EncodeToString([]byte("\x00" + a.User + "\x00" + a.Password))
		lines = []string{"AUTH PLAIN " + resp}
	case mechs["LOGIN"]:
		lines = []string{"AUTH LOGIN"}
		steps = []string{
			base64.StdEncoding.EncodeToString([]byte(a.User)),
			base64.StdEncoding.EncodeToString([]byte(a.Password)),
		}
	default:
		return &loginError{hopError{err: fmt.Errorf("deliver: %s does not offer AUTH PLAIN or LOGIN (offers %q)", s.remote, s.authParam()), notSent: true}}
	}
	// Neither the command nor a response may be echoed into an error:
	// they hold the password.
	cmd := strings.Fields(lines[0])[0] + " " + strings.Fields(lines[0])[1]
	for i := 0; ; i++ {
		wire, err := s.roundTrip(lines, s.cmdTimeout, func(int, wireReply) bool { return false })
		if err != nil {
			return s.fail(cmd, err)
		}
		r := wire[0]
		switch {
		case r.code == 235:
			return nil
		case r.code == 334 && i < len(steps):
			lines = []string{steps[i]}
			continue
		case r.code == 334:
			// A challenge we have no answer for: cancel (RFC 4954 §4).
			s.roundTrip([]string{"*"}, s.cmdTimeout, func(int, wireReply) bool { return false })
			s.broken = true
			return fmt.Errorf("deliver: %s: %s: unexpected challenge", s.remote, cmd)
		case r.code/100 == 5:
			// 535 5.7.8 and the like: the login itself is refused.
			s.broken = true
			return &loginError{hopError{err: fmt.Errorf("deliver: %s: %s: login as %s refused: %s", s.remote, cmd, a.User, r.text), code: r.code, text: r.text, notSent: true}}
		default:
			s.broken = true
			return &hopError{err: fmt.Errorf("deliver: %s: %s: %s", s.remote, cmd, r.text), code: r.code, text: r.text, notSent: true}
		}
	}
}

// authMechanisms are the SASL mechanisms in the hop's EHLO reply.
func (s *clientSession) authMechanisms() map[string]bool {
	m := map[string]bool{}
	for _, f := range strings.Fields(s.authParam()) {
		m[strings.ToUpper(f)] = true
	}
	return m
}

// loginError is a login the server refused with a 5xx reply, or one it
// cannot take at all (no mechanism we speak): trying the next address of
// the same hop with the same login would only be refused again.
type loginError struct{ hopError }

func refusedLogin(err error) bool {
	var le *loginError
	return errors.As(err, &le)
}
