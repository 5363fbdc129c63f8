package relay

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net/netip"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/mailauth"
	"github.com/relay-mta/relay/relay/config"
)

// AuthInput is one message as a relay receives it, for CheckAuth.
type AuthInput struct {
	IP       netip.Addr    // the client's address
	HELO     string        // the name it gave in EHLO or HELO
	MailFrom envelope.Path // the reverse path; the null path for <>
	Message  []byte        // header section, empty line, body; CRLF line ends
}

// AuthCheck is what a relay would conclude about a message.
type AuthCheck struct {
	// Results are its verdicts, one per method.
	Results mailauth.Results
	// Head are the fields it would put in front of the message: its
	// Authentication-Results field and, for mail a DMARC policy wants
	// quarantined, X-Relay-DMARC.
	Head string
	// Refusal is the reply it would refuse the message with (at MAIL
	// FROM for SPF, at the end of DATA otherwise); nil: accepted.
	Refusal error
}

// CheckAuth judges a message as the relay configured by cfg judges one
// from a client it does not trust (docs/design.md §16), for `relay auth
// check`: DKIM and ARC as [dkim] and [arc] say, SPF and DMARC whatever
// [auth] says (that is what the check is for; its refusal settings
// apply), lookups through [dns] servers. No ARC seal is made, and so no
// [[arc.sign]] key is read.
func CheckAuth(cfg *config.Config, in AuthInput, log *slog.Logger) (*AuthCheck, error) {
	c := *cfg
	c.Auth.SPF, c.Auth.DMARC = true, true
	c.ARC.Sign = nil
	resolver, err := newResolver(&c, nil)
	if err != nil {
		return nil, err
	}
	p, err := newAuthPolicy(&c, resolver, log)
	if err != nil {
		return nil, err
	}
	spf, refusal := p.spf(in.IP, in.HELO, in.MailFrom, log)
	br := bufio.NewReader(bytes.NewReader(in.Message))
	header, err := readHeader(br, maxHeaderBytes)
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(br) // from memory: cannot fail
	res, head, _, err := p.judge(judgeInput{id: "check", header: header,
		body:  func() (io.Reader, error) { return bytes.NewReader(body), nil },
		dmarc: true, spf: spf}, log)
	out := &AuthCheck{Results: res, Head: string(head), Refusal: refusal}
	if err != nil {
		out.Head = res.Field(c.Hostname) // refused: nothing would be added
		if out.Refusal == nil {
			out.Refusal = err
		}
	}
	return out, nil
}
