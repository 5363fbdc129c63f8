package dkim

import (
	"strings"
)

// maxReason caps the reason text of a result: it comes from error
// messages, partly from the signature itself, and is for humans.
const maxReason = 200

// maxValue is the longest property value a result shows. No domain or
// selector is longer (RFC 1035: 255 octets); a longer one comes from a
// signature that cannot verify anyway, and would make a line longer than
// mail allows (998 octets, RFC 5322 §2.1.1).
const maxValue = 255

// maxLine is the longest line of a header field the relay writes.
const maxLine = 998

// String renders r as an RFC 8601 resinfo, the text of one verdict in an
// Authentication-Results field:
//
//	dkim=pass header.d=a.test header.s=s1 header.a=ed25519-sha256 header.b="Zm9vYmFy"
//	dkim=fail reason="body hash did not verify" header.d=a.test header.s=s1 …
//
// Every value from the signature is quoted when it is not a plain domain
// or address, so that no signature can write its own verdict into the
// field.
func (r Result) String() string {
	if r.Status == None || r.Status == "" {
		return "dkim=none"
	}
	var b strings.Builder
	writeVerdict(&b, "dkim", r.Status, r.Reason)
	for _, p := range [...]struct{ name, value string }{
		{"header.d", r.Domain},
		{"header.i", r.Identifier},
		{"header.s", r.Selector},
		{"header.a", r.Algorithm},
		{"header.b", r.SignaturePrefix},
	} {
		if p.value != "" && len(p.value) <= maxValue {
			b.WriteString(" " + p.name + "=" + pvalue(p.value))
		}
	}
	return b.String()
}

// writeVerdict writes "method=status", and the reason when there is one,
// capped and quoted.
func writeVerdict(b *strings.Builder, method string, status Status, reason string) {
	b.WriteString(method + "=" + string(status))
	if reason != "" {
		if len(reason) > maxReason {
			reason = reason[:maxReason]
		}
		b.WriteString(" reason=" + quoted(reason))
	}
}

// Verdict is "method=status", and the reason, capped and quoted, when
// there is one: the start of a resinfo, for methods other packages
// judge (SPF and DMARC, package mailauth) to be written as DKIM's are.
func Verdict(method, status, reason string) string {
	var b strings.Builder
	writeVerdict(&b, method, Status(status), reason)
	return b.String()
}

// PValue returns s as it may stand as a property value (RFC 8601 §2.2):
// bare when it is a domain name or address, otherwise a quoted-string.
func PValue(s string) string { return pvalue(s) }

// AuthenticationResults is the Authentication-Results header field (RFC
// 8601) for the results, by the authentication service authservID (the
// relay's hostname), CRLF included; one verdict per line, and dkim=none
// when there are no results:
//
//	Authentication-Results: c.test;
//		dkim=pass header.d=a.test header.s=s1 header.a=ed25519-sha256 header.b="Zm9vYmFy"
func AuthenticationResults(authservID string, results []Result) string {
	if len(results) == 0 {
		return "Authentication-Results: " + pvalue(authservID) + "; dkim=none\r\n"
	}
	resinfo := make([]string, len(results))
	for i, r := range results {
		resinfo[i] = r.String()
	}
	return AuthResultsField(authservID, resinfo)
}

// AuthResultsField is the Authentication-Results header field by
// authservID with the given verdicts (RFC 8601 resinfo, as Result.String
// and ARCResult.String write them), one a line, CRLF included; "none"
// when there are none.
func AuthResultsField(authservID string, resinfo []string) string {
	var b strings.Builder
	b.WriteString("Authentication-Results: " + pvalue(authservID))
	if len(resinfo) == 0 {
		b.WriteString("; none\r\n")
		return b.String()
	}
	for _, r := range resinfo {
		b.WriteString(";\r\n\t" + fold(r, maxLine-1))
	}
	b.WriteString("\r\n")
	return b.String()
}

// fold breaks s at spaces (folding whitespace: unfolding gives s back)
// so that no line is longer than limit octets; one verdict with long
// values would otherwise overrun the line length of mail.
func fold(s string, limit int) string {
	var b strings.Builder
	for len(s) > limit {
		i := strings.LastIndexByte(s[:limit+1], ' ')
		if i <= 0 {
			break // no space to fold at: values are bounded, so never
		}
		b.WriteString(s[:i] + "\r\n")
		s = s[i:] // the space begins the continuation line
	}
	b.WriteString(s)
	return b.String()
}

// pvalue returns s as it may stand as a property value: bare when it is a
// domain name or address (letters, digits, "-._@+"), otherwise a
// quoted-string.
func pvalue(s string) string {
	if s == "" || strings.HasPrefix(s, ".") {
		return quoted(s)
	}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '.' || c == '_' || c == '@' || c == '+':
		default:
			return quoted(s)
		}
	}
	return s
}

// quoted makes s a quoted-string on one line: quotes and backslashes are
// escaped, and control characters (line breaks above all) and non-ASCII bytes become '?'.
func quoted(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range []byte(s) {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c >= 0x7f:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
