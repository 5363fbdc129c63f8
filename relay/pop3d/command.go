package pop3d

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
)

// command is one parsed command line.
type command struct {
	Verb string   // upper case keyword
	Args []string // the arguments, split on spaces
	// Rest is everything after the keyword and one space, unsplit: the
	// argument of PASS, whose password may contain spaces (RFC 1939 §7).
	Rest string
}

// Errors of parseCommand; their text is sent after "-ERR ".
var (
	errEmptyCommand   = errors.New("empty command")
	errControlChars   = errors.New("control characters in command")
	errBadKeyword     = errors.New("unknown command")
	errTooManyArgs    = errors.New("too many arguments")
	errArgumentTooBig = errors.New("argument too long")
)

const (
	maxArgs   = 2  // TOP has the most: message and lines
	maxArgLen = 40 // RFC 1939 §3, except PASS (Rest)
)

// parseCommand splits a command line (without its CRLF): a keyword of
// three or four letters, case-insensitive, then arguments separated by
// spaces. It refuses control characters anywhere except tabs and spaces in
// a password, so nothing a client sends can end a line early for a
// component that logs or forwards it.
func parseCommand(line string) (command, error) {
	if line == "" {
		return command{}, errEmptyCommand
	}
	verb, rest, hasRest := strings.Cut(line, " ")
	if len(verb) < 3 || len(verb) > 4 {
		return command{}, errBadKeyword
	}
	for i := 0; i < len(verb); i++ {
		c := verb[i] | 0x20
		if c < 'a' || c > 'z' {
			return command{}, errBadKeyword
		}
	}
	cmd := command{Verb: strings.ToUpper(verb)}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return command{}, errControlChars
		}
	}
	if !hasRest {
		return cmd, nil
	}
	cmd.Rest = rest
	if cmd.Verb == "PASS" {
		return cmd, nil // the password is Rest, spaces and all
	}
	for _, f := range strings.Fields(rest) {
		if len(cmd.Args) == maxArgs {
			return command{}, errTooManyArgs
		}
		if len(f) > maxArgLen {
			return command{}, errArgumentTooBig
		}
		cmd.Args = append(cmd.Args, f)
	}
	return cmd, nil
}

// writeDotStuffed writes data as the body of a multi-line response (RFC
// 1939 §3): a line that starts with '.' gets one more, a last line without
// a line ending gets CRLF, and ".\r\n" ends the response. Every other byte
// goes out as it is, so a client that undoes the stuffing gets data back
// exactly. A bare LF is treated as a line end for stuffing, since some
// clients split lines on LF alone.
func writeDotStuffed(w *bufio.Writer, data []byte) {
	lineStart := true
	for len(data) > 0 {
		if lineStart && data[0] == '.' {
			w.WriteByte('.')
		}
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			w.Write(data)
			lineStart = false
			break
		}
		w.Write(data[:i+1])
		data = data[i+1:]
		lineStart = true
	}
	if !lineStart {
		w.WriteString("\r\n")
	}
	w.WriteString(".\r\n")
}

// topLines returns the header of msg, the blank line after it, and the
// first n lines of its body (RFC 1939 §7 TOP). A message with no blank
// line is all header.
func topLines(msg []byte, n int) []byte {
	end := headerEnd(msg)
	i := end
	for k := 0; k < n && i < len(msg); k++ {
		j := bytes.IndexByte(msg[i:], '\n')
		if j < 0 {
			return msg
		}
		i += j + 1
	}
	return msg[:i]
}

// headerEnd returns the offset just after the blank line that ends the
// header, or len(msg) when there is none.
func headerEnd(msg []byte) int {
	if bytes.HasPrefix(msg, []byte("\r\n")) {
		return 2
	}
	if bytes.HasPrefix(msg, []byte("\n")) {
		return 1
	}
	for i := 0; ; {
		j := bytes.IndexByte(msg[i:], '\n')
		if j < 0 {
			return len(msg)
		}
		i += j + 1
		switch {
		case bytes.HasPrefix(msg[i:], []byte("\r\n")):
			return i + 2
		case bytes.HasPrefix(msg[i:], []byte("\n")):
			return i + 1
		}
	}
}
