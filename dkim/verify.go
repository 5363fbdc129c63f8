package dkim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// Status is the verdict on one signature, named as in RFC 8601 §2.7.1.
type Status string

// The verdicts a Verifier gives.
const (
	// None: the message has no signature.
	None Status = "none"
	// Pass: the signature verified; the signing domain vouches for the
	// message as it is.
	Pass Status = "pass"
	// Fail: the signature did not verify; the signed header fields or the
	// body changed after signing, or the signature is a forgery.
	Fail Status = "fail"
	// TempError: the key could not be fetched now (a DNS timeout or server
	// failure); a later attempt may succeed.
	TempError Status = "temperror"
	// PermError: the signature cannot be checked: malformed, expired, no
	// key published at its selector, key revoked or of the wrong type.
	PermError Status = "permerror"
)

// Result is the verdict on one signature and what identifies it.
type Result struct {
	Status     Status
	Domain     string // d=: the signing domain
	Selector   string // s=
	Identifier string // i=, when the signature has one
	Algorithm  string // a=, such as "ed25519-sha256"
	// SignaturePrefix is the start of b= (RFC 6008), to tell apart two
	// signatures of one domain.
	SignaturePrefix string
	// Reason says why the status is not pass; "" for pass.
	Reason string
}

// TXTResolver looks up DNS TXT records; *net.Resolver is one.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// signatureField is the name of the header field a signature travels in.
const signatureField = "DKIM-Signature"

// defaultMaxSignatures bounds the work one message can cause, as
// OpenDKIM's MaximumSignaturesToVerify does: signatures beyond it are not
// checked.
const defaultMaxSignatures = 5

// Verifier checks the DKIM signatures of messages. The zero value looks
// keys up in DNS with the system resolver.
//
// Set the fields before the first Verify and do not change them
// afterwards; Verify may then be called from many goroutines.
type Verifier struct {
	// Keys are key records by lower-case name ("s1._domainkey.a.test" ->
	// "v=DKIM1; k=ed25519; p=…"), consulted before DNS so that networks
	// without DNS, and tests, can verify.
	Keys map[string]string
	// Resolver answers TXT lookups for keys not in Keys; nil:
	// net.DefaultResolver.
	Resolver TXTResolver
	// MaxSignatures is how many signatures of one message are checked, in
	// header order; 0: 5.
	MaxSignatures int
}

// Verify checks every signature of msg, up to MaxSignatures, and returns
// one Result per signature in header order; none when msg is unsigned.
// ctx bounds the key lookups: one that runs out is a temperror. The error
// is for a message that cannot be read at all.
func (v *Verifier) Verify(ctx context.Context, msg []byte) ([]Result, error) {
	header, rest := splitHeader(msg)
	return v.VerifyParts(ctx, header, func() (io.Reader, error) { return bytes.NewReader(rest), nil })
}

// VerifyParts is Verify for a message given as its header section (up to,
// and with, the empty line that ends it, when there is one) and a reader
// of the rest, so that a body of any size streams through the hashes.
// body is called only when the header has a signature: most mail has
// none, and opening a spooled body costs system calls.
func (v *Verifier) VerifyParts(ctx context.Context, header []byte, body func() (io.Reader, error)) ([]Result, error) {
	fields, end := headerFields(header)
	var sigs []field
	for _, f := range fields {
		if f.is(signatureField) {
			sigs = append(sigs, f)
		}
	}
	if len(sigs) == 0 {
		return nil, nil
	}
	rest, err := body()
	if err != nil {
		return nil, fmt.Errorf("dkim: verify: %w", err)
	}
	msg := io.MultiReader(bytes.NewReader(header), rest)
	if end == len(header) {
		// see Signer.Signatures
		msg = io.MultiReader(bytes.NewReader(header), strings.NewReader("\r\n"), rest)
	}
	max := v.MaxSignatures
	if max <= 0 {
		max = defaultMaxSignatures
	}
	verifs, err := msgauth.VerifyWithOptions(msg, &msgauth.VerifyOptions{
		LookupTXT:        func(name string) ([]string, error) { return v.lookup(ctx, name) },
		MaxVerifications: max,
	})
	if err != nil && !errors.Is(err, msgauth.ErrTooManySignatures) {
		return nil, fmt.Errorf("dkim: verify: %w", err)
	}
	results := make([]Result, 0, len(verifs))
	for i, vr := range verifs {
		tags := parseTags(sigs[i].value())
		r := Result{
			Domain:     tags["d"],
			Selector:   tags["s"],
			Identifier: tags["i"],
			Algorithm:  tags["a"],
		}
		if b := tags["b"]; len(b) >= 8 {
			r.SignaturePrefix = b[:8]
		}
		switch e := vr.Err; {
		case e == nil:
			r.Status = Pass
		case msgauth.IsTempFail(e):
			r.Status = TempError
		case msgauth.IsPermFail(e):
			r.Status = PermError
		default:
			r.Status = Fail
		}
		if vr.Err != nil {
			// go-msgauth nests "dkim: " prefixes ("dkim: signature did not
			// verify: dkim: invalid Ed25519 signature").
			r.Reason = strings.ReplaceAll(vr.Err.Error(), "dkim: ", "")
		}
		results = append(results, r)
	}
	return results, nil
}

// lookup finds the key record at name: in the static table, else in DNS.
// go-msgauth turns an error into temperror when it is a net.Error that
// says Temporary, and into permerror otherwise, so the errors here are
// shaped for that: only "no such record" is permanent (RFC 6376 §6.1.2,
// no key: PERMFAIL); any other failure to get an answer is temporary, so
// that a DNS outage never makes good mail look forged.
func (v *Verifier) lookup(ctx context.Context, name string) ([]string, error) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if rec, ok := v.Keys[name]; ok {
		return []string{rec}, nil
	}
	var res TXTResolver = net.DefaultResolver
	if v.Resolver != nil {
		res = v.Resolver
	}
	txts, err := res.LookupTXT(ctx, name)
	if err == nil {
		return txts, nil
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return nil, fmt.Errorf("no key record at %s", name)
	}
	return nil, temporaryError{name: name, err: err}
}

// temporaryError is a failed key lookup that may succeed later. It is a
// net.Error with Temporary true, which is what go-msgauth checks.
type temporaryError struct {
	name string
	err  error
}

func (e temporaryError) Error() string {
	return "temporary DNS failure for " + e.name
}
func (e temporaryError) Unwrap() error   { return e.err }
func (e temporaryError) Timeout() bool   { return false }
func (e temporaryError) Temporary() bool { return true }

var _ net.Error = temporaryError{}

// parseTags reads a tag list (RFC 6376 §3.2) leniently: this is only for
// naming a signature in results; go-msgauth does the strict parsing.
// Whitespace inside values is removed, as it is for b= and d=.
func parseTags(v string) map[string]string {
	tags := map[string]string{}
	for _, t := range strings.Split(v, ";") {
		name, value, ok := strings.Cut(t, "=")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		if _, dup := tags[name]; !dup {
			tags[name] = strings.Join(strings.Fields(value), "")
		}
	}
	return tags
}
