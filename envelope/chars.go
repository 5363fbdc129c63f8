package envelope

// Character classes of RFC 5321 §4.1.2 and RFC 5322 §3.2.3. They are
// switch-based functions rather than lookup tables so the package holds no
// mutable state; the compiler turns them into a few comparisons.

// isAlpha reports whether c is an ASCII letter.
func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// isDigit reports whether c is an ASCII decimal digit.
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isLetDig is Let-dig: ALPHA / DIGIT.
func isLetDig(c byte) bool { return isAlpha(c) || isDigit(c) }

// isAtext is RFC 5322 atext (ASCII only; UTF-8 is handled by the callers).
func isAtext(c byte) bool {
	if isLetDig(c) {
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '/', '=', '?', '^', '_', '`', '{', '|', '}', '~':
		return true
	}
	return false
}

// isQtextSMTP is qtextSMTP: %d32-33 / %d35-91 / %d93-126, i.e. printable
// ASCII and space except '"' and '\'.
func isQtextSMTP(c byte) bool { return c >= 32 && c <= 126 && c != '"' && c != '\\' }

// isHexUpper reports whether c is 0-9 or A-F (xtext allows upper case only).
func isHexUpper(c byte) bool { return isDigit(c) || 'A' <= c && c <= 'F' }

// hexVal returns the value of hexadecimal digit c (either case), or -1.
func hexVal(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}

// hasNonASCII reports whether s holds any byte outside US-ASCII.
func hasNonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return true
		}
	}
	return false
}
