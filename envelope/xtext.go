package envelope

import (
	"strings"
	"unicode/utf8"
)

// DecodeXtext decodes RFC 3461 xtext ("+2B" -> "+"); malformed input
// (lowercase hex, a '+' without two hex digits, chars outside 33..126, '=')
// is ErrParamSyntax.
//
// The result may hold any byte, control characters included; callers that
// put it into headers or replies must check it (the parameter parsers do).
func DecodeXtext(s string) (string, error) {
	plus := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) || !isHexUpper(s[i+1]) || !isHexUpper(s[i+2]) {
				return "", errorf(ErrParamSyntax, "xtext %s has '+' without two upper-case hex digits", quote(s))
			}
			plus = true
			i += 2
		case c < 33 || c > 126 || c == '=':
			return "", errorf(ErrParamSyntax, "invalid character %s in xtext %s", quoteByte(c), quote(s))
		}
	}
	if !plus {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '+' {
			b.WriteByte(byte(hexVal(s[i+1])<<4 | hexVal(s[i+2])))
			i += 2
		} else {
			b.WriteByte(s[i])
		}
	}
	return b.String(), nil
}

// EncodeXtext encodes s as xtext: '+', '=', and bytes outside 33..126 become +XX.
func EncodeXtext(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if needsXtextHex(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsXtextHex(c) {
			b.WriteByte('+')
			b.WriteByte(upperHex[c>>4])
			b.WriteByte(upperHex[c&0xf])
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// upperHex is indexed, never written: a constant string, not mutable state.
const upperHex = "0123456789ABCDEF"

// needsXtextHex reports whether c is not an xchar.
func needsXtextHex(c byte) bool { return c < 33 || c > 126 || c == '+' || c == '=' }

// decodeUTF8Addr decodes the address of an ORCPT of type "utf-8": RFC 6533
// utf-8-addr-xtext or utf-8-addr-unitext (QCHAR, raw UTF-8, and \x{HEX}),
// and, for senders that treat it like any other ORCPT, RFC 3461 "+XX".
// Both escapes are decoded in a single pass, so nothing is decoded twice.
// The result must be valid UTF-8 without control characters.
func decodeUTF8Addr(s string) (string, error) {
	simple := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '+' || c == '\\' || c == '=' || c <= ' ' || c == 0x7f {
			simple = false
			break
		}
	}
	if simple {
		if !utf8.ValidString(s) {
			return "", errorf(ErrParamSyntax, "ORCPT address %s is not valid UTF-8", quote(s))
		}
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) || !isHexUpper(s[i+1]) || !isHexUpper(s[i+2]) {
				return "", errorf(ErrParamSyntax, "ORCPT address %s has '+' without two upper-case hex digits", quote(s))
			}
			b.WriteByte(byte(hexVal(s[i+1])<<4 | hexVal(s[i+2])))
			i += 3
		case c == '\\':
			r, n, ok := parseEmbeddedUnicode(s[i:])
			if !ok {
				return "", errorf(ErrParamSyntax, "ORCPT address %s has an invalid \\x{HEX} escape", quote(s))
			}
			b.WriteRune(r)
			i += n
		case c <= ' ' || c == '=' || c == 0x7f:
			return "", errorf(ErrParamSyntax, "invalid character %s in ORCPT address %s", quoteByte(c), quote(s))
		default:
			b.WriteByte(c)
			i++
		}
	}
	d := b.String()
	if !utf8.ValidString(d) {
		return "", errorf(ErrParamSyntax, "ORCPT address %s is not valid UTF-8", quote(s))
	}
	if hasControl(d) {
		return "", errorf(ErrParamSyntax, "ORCPT address %s encodes a control character", quote(s))
	}
	return d, nil
}

// parseEmbeddedUnicode parses an EmbeddedUnicodeChar "\x{HEX}" at the start
// of s and returns the code point and the length consumed. HEXPOINT follows
// RFC 6533 with its errata: two digits only for characters that need
// escaping ("5C" and 80..FF included), otherwise no leading zero, no
// surrogates, at most 10FFFF. Hex digits may be of either case (ABNF
// strings are case-insensitive).
func parseEmbeddedUnicode(s string) (rune, int, bool) {
	if len(s) < 3 || s[0] != '\\' || s[1] != 'x' || s[2] != '{' {
		return 0, 0, false
	}
	end := strings.IndexByte(s, '}')
	if end < 0 {
		return 0, 0, false
	}
	digits := s[3:end]
	if len(digits) < 2 || len(digits) > 6 {
		return 0, 0, false
	}
	v := 0
	for i := 0; i < len(digits); i++ {
		h := hexVal(digits[i])
		if h < 0 {
			return 0, 0, false
		}
		v = v<<4 | h
	}
	if len(digits) == 2 {
		if !(v < 0x21 || v == '+' || v == '=' || v == '\\' || v == 0x7f || v >= 0x80) || v == 0 {
			return 0, 0, false
		}
	} else if digits[0] == '0' || v < 0x100 || v > utf8.MaxRune || 0xD800 <= v && v <= 0xDFFF {
		return 0, 0, false
	}
	return rune(v), end + 1, true
}

// encodeUTF8Addr encodes an ORCPT address of type "utf-8" as RFC 6533
// utf-8-addr-xtext: the 7-bit form, safe whether or not the next hop
// offers SMTPUTF8.
func encodeUTF8Addr(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for _, r := range s {
		if r > ' ' && r < 0x7f && r != '+' && r != '=' && r != '\\' {
			b.WriteByte(byte(r))
			continue
		}
		b.WriteString(`\x{`)
		if r < 0x100 {
			b.WriteByte(upperHex[r>>4])
			b.WriteByte(upperHex[r&0xf])
		} else {
			started := false
			for shift := 20; shift >= 0; shift -= 4 {
				d := (r >> shift) & 0xf
				if d != 0 || started {
					b.WriteByte(upperHex[d])
					started = true
				}
			}
		}
		b.WriteByte('}')
	}
	return b.String()
}

// hasControl reports whether s holds an ASCII control character (C0 or DEL),
// which no decoded parameter may carry into a DSN or a log line.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}
