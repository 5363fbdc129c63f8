package dkim

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// signedFields are the header fields a signature covers when the message
// has them: RFC 6376 §5.4.1's recommendation, plus the MIME fields, which
// decide how a reader interprets the signed body. Trace fields (Received,
// our X-Relay-Handoff, Authentication-Results) are left out: relays add
// them on the way, and a signature over them could not survive a hop.
var signedFields = [...]string{
	"From", "To", "Cc", "Subject", "Date", "Message-ID",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"Reply-To", "In-Reply-To", "References",
}

// Key is one signing key of a domain.
type Key struct {
	Selector string        // the s= tag: the key is at <Selector>._domainkey.<domain>
	Signer   crypto.Signer // ed25519 or RSA (at least MinRSABits)
}

// Signer signs messages for one domain (the d= tag). A domain with
// several keys, say ed25519 and RSA during a migration or for RFC 8463's
// dual signing, gets one DKIM-Signature per key.
//
// Set the fields before the first Sign and do not change them afterwards;
// Sign may then be called from many goroutines.
type Signer struct {
	Domain string
	Keys   []Key
	// Expiration, when not zero, limits how long signatures stay valid
	// (the x= tag): a verifier treats an expired signature as permerror.
	// Zero: no expiration, the usual choice for mail that may sit in
	// queues for days.
	Expiration time.Duration
	// Now is the clock for Expiration; nil: time.Now.
	Now func() time.Time
}

// Sign returns msg with this signer's DKIM-Signature fields in front.
func (s *Signer) Sign(msg []byte) ([]byte, error) {
	sigs, err := s.Signatures(msg)
	if err != nil {
		return nil, err
	}
	return append(sigs, msg...), nil
}

// Signatures returns the DKIM-Signature fields for msg, one per key, each
// ending in CRLF, for the caller to put in front of the message.
//
// The signatures use relaxed canonicalization for header and body, which
// survives the whitespace and folding changes MTAs make; they cover the
// recommended header fields the message has, each as many times as it
// occurs, and From once more than it occurs, so that a From added on the
// way breaks the signature instead of changing the author a reader sees.
func (s *Signer) Signatures(msg []byte) ([]byte, error) {
	header, rest := splitHeader(msg)
	return s.SignaturesParts(header, func() (io.Reader, error) { return bytes.NewReader(rest), nil })
}

// SignaturesParts is Signatures for a message given as its header section
// (with the empty line that ends it, when there is one) and the rest,
// which body returns a new reader of for each key, so that a body of any
// size streams through the hashes.
func (s *Signer) SignaturesParts(header []byte, body func() (io.Reader, error)) ([]byte, error) {
	if s.Domain == "" || len(s.Keys) == 0 {
		return nil, errors.New("dkim: signer without domain or keys")
	}
	fields, end := headerFields(header)
	if end == len(header) {
		// A message without a body may also lack the empty line after its
		// header; go-msgauth needs it, and its canonical form is the same.
		header = append(header[:len(header):len(header)], "\r\n"...)
	}
	var expiration time.Time
	if s.Expiration > 0 {
		now := time.Now
		if s.Now != nil {
			now = s.Now
		}
		expiration = now().Add(s.Expiration)
	}
	var out []byte
	for _, k := range s.Keys {
		signer, err := msgauth.NewSigner(&msgauth.SignOptions{
			Domain:                 s.Domain,
			Selector:               k.Selector,
			Signer:                 k.Signer,
			Hash:                   crypto.SHA256,
			HeaderCanonicalization: msgauth.CanonicalizationRelaxed,
			BodyCanonicalization:   msgauth.CanonicalizationRelaxed,
			HeaderKeys:             headerKeys(fields),
			Expiration:             expiration,
		})
		if err != nil {
			return nil, fmt.Errorf("dkim: sign for %s (selector %s): %w", s.Domain, k.Selector, err)
		}
		rest, err := body()
		if err == nil {
			_, err = signer.Write(header)
		}
		if err == nil {
			_, err = io.Copy(signer, rest)
		}
		if err != nil {
			signer.Close()
			return nil, fmt.Errorf("dkim: sign for %s (selector %s): %w", s.Domain, k.Selector, err)
		}
		if err := signer.Close(); err != nil {
			return nil, fmt.Errorf("dkim: sign for %s (selector %s): %w", s.Domain, k.Selector, err)
		}
		out = append(out, signer.Signature()...)
	}
	return out, nil
}

// headerKeys is the h= list for a message with these header fields.
func headerKeys(fields []field) []string {
	var keys []string
	for _, name := range signedFields {
		for _, f := range fields {
			if f.is(name) {
				keys = append(keys, name)
			}
		}
	}
	return append(keys, "From") // oversigned: one more than there are
}

// SignedBy reports whether msg already carries a DKIM-Signature of
// domain (d=, compared without regard to case), valid or not. A relay
// uses it to sign a message once even when it comes back through another
// MTA.
func SignedBy(msg []byte, domain string) bool {
	fields, _ := headerFields(msg)
	for _, f := range fields {
		if f.is(signatureField) && strings.EqualFold(parseTags(f.value())["d"], strings.TrimSuffix(domain, ".")) {
			return true
		}
	}
	return false
}
