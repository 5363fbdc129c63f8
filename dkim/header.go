package dkim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
)

// field is one header field of a message as it is on the wire.
type field struct {
	name string // as written, without the colon; "" for a malformed line
	raw  []byte // the whole field: continuation lines and line endings included
}

// value returns the field body unfolded: line breaks removed, leading and
// trailing whitespace trimmed.
func (f field) value() string {
	_, v, _ := bytes.Cut(f.raw, []byte(":"))
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	v = bytes.ReplaceAll(v, []byte("\n"), nil)
	return strings.TrimSpace(string(v))
}

func (f field) is(name string) bool { return strings.EqualFold(f.name, name) }

// headerFields splits the header section of msg into fields. end is the
// offset of the empty line that ends the header section, or len(msg) when
// there is none (a message may have no body). Lines may end in CRLF or LF.
func headerFields(msg []byte) (fields []field, end int) {
	off := 0
	for off < len(msg) {
		n := bytes.IndexByte(msg[off:], '\n') + 1
		if n == 0 {
			n = len(msg) - off
		}
		line := msg[off : off+n]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return fields, off
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			last := &fields[len(fields)-1]
			last.raw = msg[off-len(last.raw) : off+n]
		} else {
			name, _, ok := bytes.Cut(line, []byte(":"))
			f := field{raw: line}
			if ok {
				f.name = string(bytes.TrimRight(name, " \t"))
			}
			fields = append(fields, f)
		}
		off += n
	}
	return fields, len(msg)
}

// FromDomain returns the domain of the author in msg's From header field,
// lower case: the domain a signature must carry to be aligned with it
// (DMARC, RFC 7489 §3.1). It is an error when there is no From field,
// more than one (RFC 5322 §3.6 allows one, and a second is a known way to
// make a verifier and a reader disagree), or authors in several domains.
func FromDomain(msg []byte) (string, error) {
	fields, _ := headerFields(msg)
	var from []field
	for _, f := range fields {
		if f.is("From") {
			from = append(from, f)
		}
	}
	switch len(from) {
	case 0:
		return "", errors.New("dkim: no From header field")
	case 1:
	default:
		return "", fmt.Errorf("dkim: %d From header fields", len(from))
	}
	addrs := fromAddresses(from[0].value())
	if len(addrs) == 0 {
		return "", fmt.Errorf("dkim: no address in From: %.100q", from[0].value())
	}
	domain := ""
	for _, a := range addrs {
		at := strings.LastIndexByte(a, '@')
		if at < 0 {
			return "", fmt.Errorf("dkim: From address %.100q has no domain", a)
		}
		d := strings.TrimSuffix(strings.ToLower(a[at+1:]), ".")
		if domain != "" && d != domain {
			return "", fmt.Errorf("dkim: From names authors in %s and %s", domain, d)
		}
		domain = d
	}
	if domain == "" {
		return "", errors.New("dkim: empty domain in From")
	}
	return domain, nil
}

// fromAddresses returns the addr-specs in a From field body. It uses
// net/mail's parser, with encoded words in any charset accepted undecoded
// (only the addresses matter here); when that fails on a malformed field,
// it falls back to the text in angle brackets, or the whole value.
func fromAddresses(v string) []string {
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{
		CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
	}}
	if list, err := p.ParseList(v); err == nil {
		out := make([]string, len(list))
		for i, a := range list {
			out[i] = a.Address
		}
		return out
	}
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return []string{strings.TrimSpace(v[i+1 : i+j])}
		}
	}
	if v = strings.TrimSpace(v); v != "" && !strings.ContainsAny(v, " \t,;<>") {
		return []string{v}
	}
	return nil
}

// RemoveAuthResults returns msg without the Authentication-Results fields
// whose authserv-id is authservID (compared without regard to case), and
// how many it removed. RFC 8601 §5: a relay must not pass on results that
// claim to come from itself but were added before the message reached it,
// or readers would trust a forgery. Fields of other authserv-ids stay. msg
// is not modified; when nothing is removed it is returned as is.
func RemoveAuthResults(msg []byte, authservID string) ([]byte, int) {
	fields, end := headerFields(msg)
	n := 0
	for _, f := range fields {
		if f.is("Authentication-Results") && strings.EqualFold(authServID(f.value()), authservID) {
			n++
		}
	}
	if n == 0 {
		return msg, 0
	}
	out := make([]byte, 0, len(msg))
	for _, f := range fields {
		if f.is("Authentication-Results") && strings.EqualFold(authServID(f.value()), authservID) {
			continue
		}
		out = append(out, f.raw...)
	}
	return append(out, msg[end:]...), n
}

// authServID returns the authserv-id that starts an Authentication-Results
// field body (RFC 8601 §2.2): a token or quoted-string, possibly after
// comments and whitespace.
func authServID(v string) string {
	v = skipCFWS(v)
	if strings.HasPrefix(v, `"`) {
		var b strings.Builder
		for i := 1; i < len(v); i++ {
			switch v[i] {
			case '\\':
				if i+1 < len(v) {
					i++
					b.WriteByte(v[i])
				}
			case '"':
				return b.String()
			default:
				b.WriteByte(v[i])
			}
		}
		return b.String()
	}
	end := strings.IndexAny(v, " \t\r\n;(")
	if end < 0 {
		end = len(v)
	}
	return v[:end]
}

// skipCFWS removes leading whitespace and (nested) comments. An
// unterminated comment leaves nothing.
func skipCFWS(v string) string {
	for {
		v = strings.TrimLeft(v, " \t\r\n")
		if !strings.HasPrefix(v, "(") {
			return v
		}
		end := commentEnd(v)
		if end < 0 {
			return ""
		}
		v = v[end:]
	}
}

// commentEnd returns the offset just past the comment that starts v, or
// -1 when it does not end.
func commentEnd(v string) int {
	depth := 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++ // quoted-pair
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

// splitHeader splits msg after the empty line that ends its header
// section (at its end when it has none).
func splitHeader(msg []byte) (header, rest []byte) {
	_, end := headerFields(msg)
	if end < len(msg) {
		if i := bytes.IndexByte(msg[end:], '\n'); i >= 0 {
			end += i + 1
		}
	}
	return msg[:end], msg[end:]
}
