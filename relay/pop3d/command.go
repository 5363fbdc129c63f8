package pop3d

import (
	"bufio"
	"errors"
	"io"
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

// writeDotStuffed copies the message r to w as the lines of a multi-line
// response (RFC 1939 §3): a line starting with "." gets another, a last
// line without its end gets one, and ".\r\n" ends it. With bodyLines
// >= 0 it stops after the header, the blank line that ends it and that
// many lines of the body (TOP, RFC 1939 §7; a message with no blank line
// is all header). The message streams through r's buffer whatever its
// size. An error reading r is returned; what was written so far is then
// no complete response, and the session must end.
func writeDotStuffed(w *bufio.Writer, r io.Reader, bodyLines int) error {
	br := bufio.NewReaderSize(r, 32<<10)
	lineStart, inHeader := true, true
	for body := 0; bodyLines < 0 || inHeader || body < bodyLines; {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if lineStart && line[0] == '.' {
				w.WriteByte('.')
			}
			blank := lineStart && (string(line) == "\n" || string(line) == "\r\n")
			w.Write(line)
			lineStart = line[len(line)-1] == '\n'
			switch {
			case !lineStart: // the rest of the line is still to come
			case inHeader && blank:
				inHeader = false
			case !inHeader:
				body++
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if !lineStart {
		w.WriteString("\r\n")
	}
	w.WriteString(".\r\n")
	return nil
}
