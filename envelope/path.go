package envelope

import (
	"strings"
	"unicode/utf8"
)

// ParseReversePath parses the argument of MAIL FROM (including the angle
// brackets): "<>" or a path with optional source route. "<postmaster>" without
// a domain is NOT a valid reverse path. utf8 allows UTF-8 in the local part and
// domain (RFC 6531); without it non-ASCII gives ErrNeedUTF8.
func ParseReversePath(s string, utf8 bool) (Path, error) {
	return parsePath(s, false, utf8)
}

// ParseForwardPath parses the argument of RCPT TO (including the angle
// brackets): a path with optional source route, or "<postmaster>"
// (any case). "<>" is NOT a valid forward path.
func ParseForwardPath(s string, utf8 bool) (Path, error) {
	return parsePath(s, true, utf8)
}

// parsePath implements both parsers; forward selects the RCPT TO rules.
//
// Non-ASCII is always parsed as if SMTPUTF8 were given and refused only at
// the end, so ErrNeedUTF8 means exactly "valid, but only with SMTPUTF8" and
// any other defect is reported as such.
func parsePath(s string, forward, allowUTF8 bool) (Path, error) {
	if len(s) > MaxPathLen {
		return Path{}, errorf(ErrTooLong, "path of %d octets exceeds the limit of %d", len(s), MaxPathLen)
	}
	if s == "" || s[0] != '<' {
		return Path{}, errorf(ErrSyntax, "%s does not start with '<'", quote(s))
	}
	if len(s) >= 2 && s[1] == '>' {
		if len(s) > 2 {
			return Path{}, errorf(ErrSyntax, "unexpected %s after '>' in %s", quote(s[2:]), quote(s))
		}
		if forward {
			return Path{}, errorf(ErrSyntax, "the null path \"<>\" is not a valid recipient")
		}
		return Path{}, nil
	}

	var p Path
	i := 1
	if i < len(s) && s[i] == '@' {
		route, next, err := parseRoute(s, i)
		if err != nil {
			return Path{}, err
		}
		p.Route, i = route, next
	}

	local, quoted, next, err := parseLocal(s, i)
	if err != nil {
		return Path{}, err
	}
	i = next
	if i >= len(s) {
		return Path{}, errorf(ErrSyntax, "%s has no closing '>'", quote(s))
	}
	if s[i] == '>' {
		// RFC 5321 §4.1.1.3: "<Postmaster>" is the only path without a domain.
		if forward && !quoted && p.Route == nil && equalFoldASCII(local, "postmaster") {
			if i+1 < len(s) {
				return Path{}, errorf(ErrSyntax, "unexpected %s after '>' in %s", quote(s[i+1:]), quote(s))
			}
			return Path{Local: local}, nil
		}
		return Path{}, errorf(ErrSyntax, "%s has no domain", quote(s))
	}
	// parseLocal stops only at '@', '>' or the end.
	p.Local = local

	i++ // skip '@'
	start := i
	if i < len(s) && s[i] == '[' {
		end := strings.IndexByte(s[i:], ']')
		if end < 0 {
			return Path{}, errorf(ErrSyntax, "address literal in %s has no closing ']'", quote(s))
		}
		i += end + 1
		if i < len(s) && s[i] != '>' {
			return Path{}, errorf(ErrSyntax, "unexpected %s after address literal in %s", quoteByte(s[i]), quote(s))
		}
	} else {
		for i < len(s) && s[i] != '>' {
			i++
		}
	}
	if i >= len(s) {
		return Path{}, errorf(ErrSyntax, "%s has no closing '>'", quote(s))
	}
	if err := checkDomain(s[start:i], "domain"); err != nil {
		return Path{}, err
	}
	p.Domain = s[start:i]
	if i+1 < len(s) {
		return Path{}, errorf(ErrSyntax, "unexpected %s after '>' in %s", quote(s[i+1:]), quote(s))
	}
	if !allowUTF8 && hasNonASCII(s) {
		return Path{}, errorf(ErrNeedUTF8, "%s holds non-ASCII characters", quote(s))
	}
	return p, nil
}

// parseRoute parses A-d-l ":" starting at s[i] == '@' and returns the hosts
// and the index just after the ':'.
func parseRoute(s string, i int) ([]string, int, error) {
	route := make([]string, 0, 2)
	for {
		i++ // skip '@'
		start := i
		if i < len(s) && s[i] == '[' {
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return nil, 0, errorf(ErrSyntax, "address literal in source route of %s has no closing ']'", quote(s))
			}
			i += end + 1
		} else {
			for i < len(s) && s[i] != ',' && s[i] != ':' && s[i] != '>' {
				i++
			}
		}
		host := s[start:i]
		if host == "" {
			return nil, 0, errorf(ErrSyntax, "empty host in source route of %s", quote(s))
		}
		if err := checkDomain(host, "route host"); err != nil {
			return nil, 0, err
		}
		route = append(route, host)
		if len(route) > MaxRouteLen {
			return nil, 0, errorf(ErrTooLong, "source route of %s has more than %d hosts", quote(s), MaxRouteLen)
		}
		if i >= len(s) {
			return nil, 0, errorf(ErrSyntax, "source route of %s has no ':'", quote(s))
		}
		switch s[i] {
		case ':':
			return route, i + 1, nil
		case ',':
			i++
			if i >= len(s) || s[i] != '@' {
				return nil, 0, errorf(ErrSyntax, "expected '@' after ',' in source route of %s", quote(s))
			}
		case '>':
			return nil, 0, errorf(ErrSyntax, "source route of %s has no ':'", quote(s))
		default:
			return nil, 0, errorf(ErrSyntax, "unexpected %s after route host %s in %s", quoteByte(s[i]), quote(host), quote(s))
		}
	}
}

// parseLocal parses the Local-part starting at s[i]. It returns the decoded
// local part, whether it was a quoted string, and the index of the byte that
// ended it, which is '@' or '>' (or len(s) when the input is cut short).
func parseLocal(s string, i int) (local string, quoted bool, next int, err error) {
	if i < len(s) && s[i] == '"' {
		return parseQuoted(s, i)
	}
	start := i
	for i < len(s) && s[i] != '@' && s[i] != '>' {
		i++
	}
	local = s[start:i]
	if local == "" {
		if i < len(s) && s[i] == '>' && start > 0 && s[start-1] == ':' {
			return "", false, 0, errorf(ErrSyntax, "source route of %s is not followed by a mailbox", quote(s))
		}
		return "", false, 0, errorf(ErrSyntax, "empty local part in %s", quote(s))
	}
	if err := checkDotString(local); err != nil {
		return "", false, 0, err
	}
	if len(local) > MaxLocalLen {
		return "", false, 0, errorf(ErrTooLong, "local part of %d octets exceeds the limit of %d", len(local), MaxLocalLen)
	}
	return local, false, i, nil
}

// parseQuoted parses a Quoted-string at s[i] == '"' (RFC 5321 §4.1.2, with
// UTF-8 qtext from RFC 6531) and returns it with quotes and escapes removed.
func parseQuoted(s string, i int) (string, bool, int, error) {
	start := i
	i++
	escapes := false
	for {
		if i >= len(s) {
			return "", true, 0, errorf(ErrSyntax, "unterminated quoted string in %s", quote(s))
		}
		c := s[i]
		switch {
		case c == '"':
			i++
			if i-start > MaxLocalLen {
				return "", true, 0, errorf(ErrTooLong, "local part of %d octets exceeds the limit of %d", i-start, MaxLocalLen)
			}
			if i < len(s) && s[i] != '@' && s[i] != '>' {
				return "", true, 0, errorf(ErrSyntax, "unexpected %s after quoted local part in %s", quoteByte(s[i]), quote(s))
			}
			body := s[start+1 : i-1]
			if escapes {
				body = unescapeQuoted(body)
			}
			return body, true, i, nil
		case c == '\\':
			// quoted-pairSMTP = "\" %d32-126: never a control character,
			// and never a UTF-8 octet (RFC 6531 extends only qtext).
			if i+1 >= len(s) || s[i+1] < 32 || s[i+1] > 126 {
				if i+1 < len(s) {
					return "", true, 0, errorf(ErrSyntax, "invalid quoted pair with %s in local part of %s", quoteByte(s[i+1]), quote(s))
				}
				return "", true, 0, errorf(ErrSyntax, "unterminated quoted string in %s", quote(s))
			}
			escapes = true
			i += 2
		case isQtextSMTP(c):
			i++
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return "", true, 0, errorf(ErrSyntax, "local part of %s is not valid UTF-8", quote(s))
			}
			i += size
		default:
			return "", true, 0, errorf(ErrSyntax, "invalid character %s in quoted local part of %s", quoteByte(c), quote(s))
		}
	}
}

// unescapeQuoted removes the backslashes of quoted pairs from the already
// validated body of a quoted string.
func unescapeQuoted(body string) string {
	var b strings.Builder
	b.Grow(len(body))
	for i := 0; i < len(body); i++ {
		if body[i] == '\\' {
			i++
		}
		b.WriteByte(body[i])
	}
	return b.String()
}

// checkDotString validates a Dot-string local part: atoms of atext (plus
// UTF-8 under RFC 6531) separated by single dots.
func checkDotString(local string) error {
	if local[0] == '.' || local[len(local)-1] == '.' {
		return errorf(ErrSyntax, "local part %s begins or ends with a dot", quote(local))
	}
	for i := 0; i < len(local); {
		c := local[i]
		switch {
		case isAtext(c):
			i++
		case c == '.':
			if local[i+1] == '.' {
				return errorf(ErrSyntax, "local part %s has two dots in a row", quote(local))
			}
			i++
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRuneInString(local[i:])
			if r == utf8.RuneError && size == 1 {
				return errorf(ErrSyntax, "local part %s is not valid UTF-8", quote(local))
			}
			i += size
		default:
			return errorf(ErrSyntax, "invalid character %s in local part %s", quoteByte(c), quote(local))
		}
	}
	return nil
}

// isDotString reports whether local can be written unquoted.
func isDotString(local string) bool {
	return local != "" && checkDotStringOK(local)
}

// checkDotStringOK is checkDotString without building an error, for the
// formatting hot path.
func checkDotStringOK(local string) bool {
	if local[0] == '.' || local[len(local)-1] == '.' {
		return false
	}
	for i := 0; i < len(local); {
		c := local[i]
		switch {
		case isAtext(c):
			i++
		case c == '.':
			if local[i+1] == '.' {
				return false
			}
			i++
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRuneInString(local[i:])
			if r == utf8.RuneError && size == 1 {
				return false
			}
			i += size
		default:
			return false
		}
	}
	return true
}

// String formats p in wire form with angle brackets: "<>", "<postmaster>",
// "<@a,@b:local@domain>". The local part is quoted when it is not a valid
// dot-string (escaping '"' and '\\'), so parse(p.String()) == p.
//
// A Path built by hand may hold bytes that no wire form can carry; String
// writes '?' for control characters (and, in the domain and route, for
// spaces and '>') so that its result can never split or extend an SMTP
// command line.
func (p Path) String() string {
	if p.IsNull() {
		return "<>"
	}
	var b strings.Builder
	b.Grow(p.wireLen())
	b.WriteByte('<')
	for i, h := range p.Route {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('@')
		writeHost(&b, h)
	}
	if len(p.Route) > 0 {
		b.WriteByte(':')
	}
	p.writeMailbox(&b)
	b.WriteByte('>')
	return b.String()
}

// Mailbox formats "local@domain" without brackets and without the route,
// quoting the local part when needed ("postmaster" for <postmaster>, "" for <>).
func (p Path) Mailbox() string {
	if p.IsNull() {
		return ""
	}
	var b strings.Builder
	b.Grow(len(p.Local) + len(p.Domain) + 3)
	p.writeMailbox(&b)
	return b.String()
}

// NeedsUTF8 reports whether any part of p is non-ASCII.
func (p Path) NeedsUTF8() bool {
	if hasNonASCII(p.Local) || hasNonASCII(p.Domain) {
		return true
	}
	for _, h := range p.Route {
		if hasNonASCII(h) {
			return true
		}
	}
	return false
}

// wireLen estimates the length of p.String() so it is built in one
// allocation.
func (p Path) wireLen() int {
	n := len(p.Local) + len(p.Domain) + 5
	for _, h := range p.Route {
		n += len(h) + 2
	}
	return n
}

// writeMailbox writes local@domain, or just the local part when there is no
// domain (<postmaster>).
func (p Path) writeMailbox(b *strings.Builder) {
	writeLocal(b, p.Local)
	if p.Domain != "" {
		b.WriteByte('@')
		writeHost(b, p.Domain)
	}
}

// writeLocal writes a local part as a Dot-string when it is one, else as a
// Quoted-string.
func writeLocal(b *strings.Builder, local string) {
	if isDotString(local) {
		b.WriteString(local)
		return
	}
	b.WriteByte('"')
	for i := 0; i < len(local); i++ {
		switch c := local[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c == 0x7f:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// writeHost writes a domain or route host, replacing bytes that could end
// the path or the command line (see String).
func writeHost(b *strings.Builder, h string) {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c == 0x7f || c == '>' {
			b.WriteByte('?')
		} else {
			b.WriteByte(c)
		}
	}
}

// SplitArg splits the text after "MAIL FROM:" or "RCPT TO:" into the path
// (from '<' to its matching '>', honouring quoted strings and backslash
// escapes inside them, so "<\"a> b\"@c>" is one path) and the rest (the
// parameters, leading spaces removed). Leading spaces before '<' are allowed
// (Postfix-style leniency: "MAIL FROM: <a@b>"). A missing '<' or '>' is ErrSyntax.
//
// Parameters must be separated from the path by at least one space
// (RFC 5321 §4.1.1.2); "<a@b>SIZE=1" is ErrSyntax.
func SplitArg(s string) (path, params string, err error) {
	i := 0
	for i < len(s) && s[i] == ' ' {
		i++
	}
	if i >= len(s) || s[i] != '<' {
		return "", "", errorf(ErrSyntax, "%s does not start with '<'", quote(s))
	}
	j := i + 1
	inQuote := false
scan:
	for ; j < len(s); j++ {
		switch c := s[j]; {
		case inQuote && c == '\\':
			j++ // the escaped byte cannot end the quote or the path
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '>':
			break scan
		}
	}
	if j >= len(s) {
		return "", "", errorf(ErrSyntax, "%s has no closing '>'", quote(s[i:]))
	}
	path, rest := s[i:j+1], s[j+1:]
	if rest != "" && rest[0] != ' ' {
		return "", "", errorf(ErrSyntax, "unexpected %s after '>' in %s", quote(rest), quote(s[i:]))
	}
	return path, strings.TrimLeft(rest, " "), nil
}
