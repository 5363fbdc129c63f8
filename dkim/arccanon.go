package dkim

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The DKIM primitives ARC needs (RFC 6376 §3.4 canonicalization, §3.7
// hashes, key records). go-msgauth has them, but unexported and bound to
// the DKIM-Signature field name, which ARC's signatures cover under their
// own names; so they are here, small, for ARC only.

// canonField is f in header canonicalization: relaxed (RFC 6376 §3.4.2:
// name lower case, unfolded, runs of whitespace made one space, none
// around the colon or at the end) or simple (as it is), ending in CRLF.
func canonField(raw []byte, relaxed bool) []byte {
	if !relaxed {
		return raw
	}
	name, value, _ := bytes.Cut(raw, []byte(":"))
	var b bytes.Buffer
	b.Grow(len(raw))
	b.Write(bytes.ToLower(bytes.TrimRight(name, " \t")))
	b.WriteByte(':')
	space, start := false, true
	for _, c := range value {
		switch c {
		case '\r', '\n':
		case ' ', '\t':
			space = true
		default:
			if space && !start {
				b.WriteByte(' ')
			}
			space, start = false, false
			b.WriteByte(c)
		}
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// withoutB returns the raw field of a signature with the value of its b=
// tag removed, surrounding whitespace included (RFC 6376 §3.7), the form
// the signature itself is hashed in.
func withoutB(raw []byte) []byte {
	colon := bytes.IndexByte(raw, ':')
	if colon < 0 {
		return raw
	}
	off := colon + 1
	for off <= len(raw) {
		end := bytes.IndexByte(raw[off:], ';')
		if end < 0 {
			end = len(raw)
		} else {
			end += off
		}
		tag := raw[off:end]
		if eq := bytes.IndexByte(tag, '='); eq >= 0 && string(bytes.Trim(tag[:eq], " \t\r\n")) == "b" {
			out := append([]byte(nil), raw[:off+eq+1]...)
			return append(out, raw[end:]...)
		}
		off = end + 1
	}
	return raw
}

// headerHash is the SHA-256 hash over the header fields a signature
// covers, in order, then the signature field itself with b= empty and
// without its line ending (RFC 6376 §3.7).
func headerHash(signed [][]byte, sig []byte, relaxed bool) []byte {
	h := sha256.New()
	for _, raw := range signed {
		h.Write(canonField(raw, relaxed))
	}
	h.Write(bytes.TrimRight(canonField(withoutB(sig), relaxed), "\r\n"))
	return h.Sum(nil)
}

// selectFields picks the fields named in h from fields as DKIM does (RFC
// 6376 §5.4.2): for each name, the last instance not picked yet; a name
// with no instance left stands for nothing.
func selectFields(fields []field, names []string) [][]byte {
	used := make([]bool, len(fields))
	var out [][]byte
	for _, name := range names {
		for i := len(fields) - 1; i >= 0; i-- {
			if !used[i] && fields[i].is(name) {
				used[i] = true
				out = append(out, fields[i].raw)
				break
			}
		}
	}
	return out
}

// bodyCanon is a writer that canonicalizes a body on its way into w
// (RFC 6376 §3.4.3, §3.4.4): relaxed drops whitespace at line ends and
// makes runs of it one space; both forms drop empty lines at the end and
// end a non-empty body in CRLF (simple makes an empty one CRLF). Lines may end in CRLF or LF. It keeps
// only a count of pending empty lines, so any body streams through.
type bodyCanon struct {
	w       *bufio.Writer
	relaxed bool
	cr      bool // a CR seen, not yet written
	space   bool // whitespace seen in relaxed mode, not yet written
	blank   bool // nothing on the current line yet
	empty   int  // empty lines seen, not yet written
	started bool // a line has content: the body is not empty
}

func newBodyCanon(w io.Writer, relaxed bool) *bodyCanon {
	return &bodyCanon{w: bufio.NewWriterSize(w, 32<<10), relaxed: relaxed, blank: true}
}

func (c *bodyCanon) Write(p []byte) (int, error) {
	for _, b := range p {
		if c.cr {
			c.cr = false
			if b == '\n' {
				c.eol()
				continue
			}
			c.content('\r')
		}
		switch {
		case b == '\r':
			c.cr = true
		case b == '\n':
			c.eol()
		case c.relaxed && (b == ' ' || b == '\t'):
			c.space = true
		default:
			c.content(b)
		}
	}
	return len(p), nil
}

func (c *bodyCanon) content(b byte) {
	if c.blank {
		for ; c.empty > 0; c.empty-- {
			c.w.WriteString("\r\n")
		}
		c.blank = false
		c.started = true
	}
	if c.space {
		c.w.WriteByte(' ')
		c.space = false
	}
	c.w.WriteByte(b)
}

func (c *bodyCanon) eol() {
	c.space = false
	if c.blank {
		c.empty++
		return
	}
	c.w.WriteString("\r\n")
	c.blank = true
}

// Close ends the body and flushes it to the writer.
func (c *bodyCanon) Close() error {
	if c.cr {
		c.cr = false
		c.content('\r')
	}
	if !c.blank || !c.relaxed && !c.started {
		// Simple canonicalization makes an empty body one CRLF.
		c.w.WriteString("\r\n")
		c.blank = true
	}
	return c.w.Flush()
}

// bodyHash is the SHA-256 hash of the canonical body that body reads.
func bodyHash(body func() (io.Reader, error), relaxed bool) ([]byte, error) {
	r, err := body()
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	c := newBodyCanon(h, relaxed)
	if _, err := io.Copy(c, r); err != nil {
		return nil, err
	}
	if err := c.Close(); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// signDigest signs a SHA-256 digest with an RSA key, PKCS#1 v1.5 (RFC
// 6376 §3.3.1).
func signDigest(key crypto.Signer, digest []byte) ([]byte, error) {
	return key.Sign(rand.Reader, digest, crypto.SHA256)
}

// errBadSignature is a signature that does not verify with its key.
var errBadSignature = errors.New("signature did not verify")

// verifyDigest checks sig over a SHA-256 digest with pub, which must be of
// the algorithm a (a= tag).
func verifyDigest(pub crypto.PublicKey, a string, digest, sig []byte) error {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if a != "ed25519-sha256" {
			return fmt.Errorf("key type ed25519 does not match a=%s", a)
		}
		if !ed25519.Verify(k, digest, sig) {
			return errBadSignature
		}
	case *rsa.PublicKey:
		if a != "rsa-sha256" {
			return fmt.Errorf("key type rsa does not match a=%s", a)
		}
		if rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig) != nil {
			return errBadSignature
		}
	default:
		return fmt.Errorf("unsupported key type %T", pub)
	}
	return nil
}

// minVerifyRSABits is the shortest RSA key a signature is accepted from
// (RFC 8301 §3.2).
const minVerifyRSABits = 1024

// errNoKey is a key record that publishes no usable key; the signature
// cannot be checked, permanently.
var errNoKey = errors.New("no usable key")

// parseKeyRecord reads a DKIM key record (RFC 6376 §3.6.1, RFC 8463 §4.2)
// into its public key.
func parseKeyRecord(txt string) (crypto.PublicKey, error) {
	tags := parseTags(txt)
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return nil, fmt.Errorf("%w: key record version %q", errNoKey, v)
	}
	if h, ok := tags["h"]; ok && !containsFold(strings.Split(h, ":"), "sha256") {
		return nil, fmt.Errorf("%w: key not for sha256 (h=%s)", errNoKey, h)
	}
	p, ok := tags["p"]
	if !ok {
		return nil, fmt.Errorf("%w: key record without p=", errNoKey)
	}
	if p == "" {
		return nil, fmt.Errorf("%w: key revoked", errNoKey)
	}
	raw, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("%w: p= is not base64", errNoKey)
	}
	switch k := strings.ToLower(tags["k"]); k {
	case "", "rsa":
		pub, err := x509.ParsePKIXPublicKey(raw)
		if err != nil {
			if pub, err = x509.ParsePKCS1PublicKey(raw); err != nil {
				return nil, fmt.Errorf("%w: malformed rsa key", errNoKey)
			}
		}
		rk, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: k=rsa but key is %T", errNoKey, pub)
		}
		if rk.N.BitLen() < minVerifyRSABits {
			return nil, fmt.Errorf("%w: rsa key of %d bits is too short", errNoKey, rk.N.BitLen())
		}
		return rk, nil
	case "ed25519":
		if len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: ed25519 key of %d bytes", errNoKey, len(raw))
		}
		return ed25519.PublicKey(raw), nil
	default:
		return nil, fmt.Errorf("%w: unknown key type k=%s", errNoKey, k)
	}
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(strings.TrimSpace(x), s) {
			return true
		}
	}
	return false
}
