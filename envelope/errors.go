package envelope

import (
	"fmt"
	"strconv"
	"strings"
)

// detailError carries a precise message for one of the sentinel errors.
// It exists (rather than fmt.Errorf with %w) so the text reads
// `envelope: <detail>: <sentinel text>` without repeating the package
// prefix the sentinels already carry.
type detailError struct {
	detail   string
	sentinel error
}

func (e *detailError) Error() string {
	return "envelope: " + e.detail + ": " + strings.TrimPrefix(e.sentinel.Error(), "envelope: ")
}

// Unwrap lets errors.Is match the sentinel.
func (e *detailError) Unwrap() error { return e.sentinel }

// errorf builds an error wrapping sentinel with a formatted detail message.
func errorf(sentinel error, format string, args ...any) error {
	return &detailError{detail: fmt.Sprintf(format, args...), sentinel: sentinel}
}

// maxQuoted bounds how much of an offending input an error message repeats,
// so that a hostile client cannot make log lines or replies arbitrarily long.
const maxQuoted = 80

// quote renders s for an error message: Go-quoted in ASCII (so control
// characters and UTF-8 show as escapes and can go into a reply line as
// they are) and truncated.
func quote(s string) string {
	if len(s) > maxQuoted {
		return strconv.QuoteToASCII(s[:maxQuoted]) + "..."
	}
	return strconv.QuoteToASCII(s)
}

// quoteByte renders one offending byte: 'x' when printable ASCII, else its
// value (0x0d), since a lone byte of a UTF-8 sequence is no character.
func quoteByte(c byte) string {
	if c > ' ' && c < 0x7f {
		return "'" + string(rune(c)) + "'"
	}
	return fmt.Sprintf("%#02x", c)
}
