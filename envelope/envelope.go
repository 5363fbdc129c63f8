// Package envelope parses and formats the SMTP envelope of RFC 5321: reverse
// and forward paths (with source routes, quoted local parts, address
// literals, and SMTPUTF8 addresses) and the ESMTP parameters of MAIL and RCPT
// (SIZE, BODY, SMTPUTF8, AUTH, RET, ENVID, NOTIFY, ORCPT).
//
// It does no I/O. Everything it accepts it can format back to wire form, and
// parsing the formatted form gives the same value again.
//
// # What the path parsers accept
//
// RFC 5321 §4.1.2, with RFC 6531 UTF-8, and these decisions where the RFC
// is silent or where following it literally would be unsafe:
//
//   - Non-ASCII is parsed as if SMTPUTF8 were given and refused at the end,
//     so ErrNeedUTF8 means "valid, but only with SMTPUTF8"; a path with any
//     other defect gets that defect's error.
//   - CR, LF, NUL and every other ASCII control character are refused everywhere,
//     even after a backslash in a quoted string.
//   - Address literals: IPv4 octets without leading zeros ("010" is octal to
//     inet_aton); "IPv6:" (any case) with no zone and "::" standing for at
//     least two groups; a bare IPv6 address without the tag is refused
//     rather than read as a general literal; general literals may not hold
//     '>' or '"', which would end the path early for other parsers.
//   - A label over 63 octets is ErrSyntax; local part over 64 octets (on
//     the wire, quotes included), path over 256 octets, domain over 255
//     octets and more than 16 route hosts are ErrTooLong.
//   - Case is kept everywhere; comparing domains is the caller's business.
package envelope

import "errors"

// Limits from RFC 5321 §4.5.3.1.
const (
	MaxPathLen   = 256 // octets of a path, including the angle brackets
	MaxLocalLen  = 64  // octets of a local part (as it appears on the wire)
	MaxDomainLen = 255 // octets of a domain
	MaxRouteLen  = 16  // hosts in a source route; longer routes are refused
)

// Path is a reverse-path or forward-path.
//
// The zero Path is the null reverse path "<>". The special recipient
// "<postmaster>" has Local "postmaster" (case as received) and no Domain.
type Path struct {
	// Route holds the source-route hosts in order, without the "@": for
	// "<@a.test,@[192.0.2.1]:u@c.test>" it is ["a.test", "[192.0.2.1]"].
	Route []string
	// Local is the local part, decoded: quotes and backslash escapes of a
	// quoted-string are removed ("\"a b\"" becomes "a b").
	Local string
	// Domain is the domain or address literal, with brackets for a literal
	// ("[192.0.2.1]", "[IPv6:2001:db8::1]"). Case is preserved as received.
	Domain string
}

// Errors returned by the parsers. Callers map them to SMTP replies; every
// error returned wraps exactly one of these, with detail in the message.
var (
	ErrSyntax       = errors.New("envelope: syntax error in address")            // 501 5.1.7 / 5.1.3
	ErrTooLong      = errors.New("envelope: address too long")                   // 501 5.1.7 / 5.1.3 (path/local/domain limit)
	ErrNeedUTF8     = errors.New("envelope: non-ASCII address without SMTPUTF8") // 553 5.6.7
	ErrParamSyntax  = errors.New("envelope: bad parameter value")                // 501 5.5.4
	ErrParamDup     = errors.New("envelope: duplicate parameter")                // 501 5.5.4
	ErrParamUnknown = errors.New("envelope: unknown parameter")                  // 555 5.5.4
)

// IsNull reports whether p is the null reverse path "<>".
func (p Path) IsNull() bool { return len(p.Route) == 0 && p.Local == "" && p.Domain == "" }

// IsPostmaster reports whether p is the domainless "<postmaster>" recipient
// of RFC 5321 §4.5.1 (compared case-insensitively).
func (p Path) IsPostmaster() bool {
	return len(p.Route) == 0 && p.Domain == "" && equalFoldASCII(p.Local, "postmaster")
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
