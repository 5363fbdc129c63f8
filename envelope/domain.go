package envelope

import (
	"net/netip"
	"strings"
	"unicode/utf8"
)

// maxLabelLen is the DNS limit on one label (RFC 1035 §2.3.4).
const maxLabelLen = 63

// checkDomain validates d as a Domain or address-literal of RFC 5321
// §4.1.2 (what names it in error messages: "domain", "route host").
//
// Labels may hold UTF-8 (RFC 6531); whether non-ASCII is acceptable at all
// is decided once per path by the caller, so that ErrNeedUTF8 is only ever
// returned for an address that SMTPUTF8 would make valid.
func checkDomain(d, what string) error {
	if d == "" {
		return errorf(ErrSyntax, "empty %s", what)
	}
	if len(d) > MaxDomainLen {
		return errorf(ErrTooLong, "%s of %d octets exceeds the limit of %d", what, len(d), MaxDomainLen)
	}
	if d[0] == '[' {
		return checkLiteral(d, what)
	}
	start := 0 // first byte of the current label
	for i := 0; i < len(d); {
		c := d[i]
		switch {
		case c == '.':
			if err := checkLabel(d, start, i, what); err != nil {
				return err
			}
			i++
			start = i
			continue
		case isLetDig(c), c == '-':
			i++
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRuneInString(d[i:])
			if r == utf8.RuneError && size == 1 {
				return errorf(ErrSyntax, "%s %s is not valid UTF-8", what, quote(d))
			}
			i += size
		default:
			return errorf(ErrSyntax, "invalid character %s in %s %s", quoteByte(c), what, quote(d))
		}
	}
	if start == len(d) {
		// RFC 5321 has no root label in a path: "b." is not a Domain.
		return errorf(ErrSyntax, "%s %s ends with a dot", what, quote(d))
	}
	return checkLabel(d, start, len(d), what)
}

// checkLabel validates d[start:end] as one sub-domain: Let-dig [Ldh-str],
// i.e. no leading or trailing hyphen, 1..63 octets.
func checkLabel(d string, start, end int, what string) error {
	switch {
	case start == end && start == 0:
		return errorf(ErrSyntax, "%s %s starts with a dot", what, quote(d))
	case start == end:
		return errorf(ErrSyntax, "%s %s has an empty label", what, quote(d))
	case d[start] == '-' || d[end-1] == '-':
		return errorf(ErrSyntax, "label %s of %s %s begins or ends with '-'", quote(d[start:end]), what, quote(d))
	case end-start > maxLabelLen:
		return errorf(ErrSyntax, "label of %d octets in %s %s exceeds the limit of %d", end-start, what, quote(d), maxLabelLen)
	}
	return nil
}

// checkLiteral validates an address-literal "[...]" (RFC 5321 §4.1.3).
func checkLiteral(d, what string) error {
	if len(d) < 2 || d[len(d)-1] != ']' {
		return errorf(ErrSyntax, "address literal %s in %s has no closing ']'", quote(d), what)
	}
	body := d[1 : len(d)-1]
	colon := strings.IndexByte(body, ':')
	if colon < 0 {
		if !validIPv4(body) {
			return errorf(ErrSyntax, "invalid IPv4 address literal %s in %s", quote(d), what)
		}
		return nil
	}
	tag, content := body[:colon], body[colon+1:]
	if equalFoldASCII(tag, "IPv6") {
		a, err := netip.ParseAddr(content)
		// A zone ("fe80::1%eth0") is meaningful only on one host and is not
		// IPv6-addr syntax; "[IPv6:192.0.2.1]" is not an IPv6 address.
		if err != nil || !a.Is6() || a.Zone() != "" || !compressesTwoGroups(content) {
			return errorf(ErrSyntax, "invalid IPv6 address literal %s in %s", quote(d), what)
		}
		return nil
	}
	// General-address-literal: Standardized-tag ":" 1*dcontent. A bare IPv6
	// address ("[2001:db8::1]") matches that syntax with tag "2001", but it
	// is a client forgetting "IPv6:", and reading it as anything else would
	// be a trap: refuse it.
	if _, err := netip.ParseAddr(body); err == nil {
		return errorf(ErrSyntax, "IPv6 address literal %s in %s lacks the \"IPv6:\" tag", quote(d), what)
	}
	if !validLdhStr(tag) {
		return errorf(ErrSyntax, "invalid tag %s in address literal %s in %s", quote(tag), quote(d), what)
	}
	if content == "" {
		return errorf(ErrSyntax, "empty address literal %s in %s", quote(d), what)
	}
	for i := 0; i < len(content); i++ {
		c := content[i]
		// dcontent is %d33-90 / %d94-126. '>' and '"' are refused as well
		// although RFC 5321 allows them: parsers that, like SplitArg, find
		// the end of a path by honouring quoted strings only would end the
		// path early or run past its end.
		if c < 33 || c > 126 || c == '[' || c == '\\' || c == ']' || c == '>' || c == '"' {
			return errorf(ErrSyntax, "invalid character %s in address literal %s in %s", quoteByte(c), quote(d), what)
		}
	}
	return nil
}

// compressesTwoGroups applies the one IPv6-addr rule of RFC 5321 §4.1.3
// that net/netip does not: "::" stands for at least two 16-bit groups, so a
// compressed address holds at most six groups besides it (an embedded IPv4
// address counting as two). s is already a valid IPv6 address.
func compressesTwoGroups(s string) bool {
	if !strings.Contains(s, "::") {
		return true
	}
	units := 0
	for part := range strings.SplitSeq(s, ":") {
		switch {
		case part == "":
		case strings.IndexByte(part, '.') >= 0:
			units += 2
		default:
			units++
		}
	}
	return units <= 6
}

// validLdhStr reports whether s is Ldh-str: letters, digits and hyphens,
// ending with a letter or digit. A leading hyphen is refused too (RFC 5321's
// ABNF permits it but no registered tag has one).
func validLdhStr(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLetDig(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// validIPv4 reports whether s is IPv4-address-literal content: four
// decimal octets 0..255. Leading zeros are refused ("010" reads as octal to
// inet_aton), so policy checks and connections agree on the address.
func validIPv4(s string) bool {
	parts := 0
	for len(s) > 0 {
		n, v := 0, 0
		for n < len(s) && isDigit(s[n]) {
			v = v*10 + int(s[n]-'0')
			n++
			if n > 3 {
				return false
			}
		}
		if n == 0 || v > 255 || (n > 1 && s[0] == '0') {
			return false
		}
		parts++
		s = s[n:]
		if len(s) > 0 {
			if s[0] != '.' || parts == 4 {
				return false
			}
			s = s[1:]
			if s == "" {
				return false
			}
		}
	}
	return parts == 4
}
