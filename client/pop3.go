package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// POP3Options say how to reach a POP3 server.
type POP3Options struct {
	Addr string // host:port
	// TLS is implicit TLS from the first byte (a listen_tls port);
	// StartTLS requires STLS before logging in. TLSConfig (nil: the
	// system roots, for the host of Addr) checks the server in both cases.
	TLS, StartTLS bool
	TLSConfig     *tls.Config
	// Timeout bounds connecting and each response; 0 means one minute.
	Timeout time.Duration
}

// POP3Error is a "-ERR" response.
type POP3Error struct {
	Command string // the command refused, without its arguments for PASS
	// Code is the RFC 2449 response code without brackets ("AUTH",
	// "IN-USE", "SYS/TEMP"), "" when there is none.
	Code string
	Text string // the whole text after "-ERR "
}

func (e *POP3Error) Error() string {
	return fmt.Sprintf("%s: -ERR %s", e.Command, e.Text)
}

// POP3 is a POP3 client session (RFC 1939). Its methods must not be
// called concurrently.
type POP3 struct {
	nc      net.Conn
	br      *bufio.Reader
	timeout time.Duration
}

// MessageInfo is one line of LIST or UIDL.
type MessageInfo struct {
	Number int
	Size   int64
	UID    string
}

// DialPOP3 connects, reads the greeting and, with StartTLS, upgrades the
// connection. Log in with Login next.
func DialPOP3(ctx context.Context, o POP3Options) (*POP3, error) {
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	cfg := o.TLSConfig
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName, _, _ = net.SplitHostPort(o.Addr)
	}
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", o.Addr, err)
	}
	if o.TLS {
		tc := tls.Client(nc, cfg)
		tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS with %s: %w", o.Addr, err)
		}
		nc = tc
	}
	c := &POP3{nc: nc, br: bufio.NewReader(nc), timeout: timeout}
	if _, err := c.status("greeting"); err != nil {
		nc.Close()
		return nil, err
	}
	if o.StartTLS && !o.TLS {
		if _, err := c.cmd("STLS", "STLS"); err != nil {
			nc.Close()
			return nil, err
		}
		tc := tls.Client(nc, cfg)
		tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("STLS with %s: %w", o.Addr, err)
		}
		c.nc, c.br = tc, bufio.NewReader(tc)
	}
	return c, nil
}

// Close drops the connection without QUIT: messages marked with Dele stay.
func (c *POP3) Close() error { return c.nc.Close() }

// Login sends USER and PASS.
func (c *POP3) Login(user, password string) error {
	if strings.ContainsAny(user, "\r\n") || strings.ContainsAny(password, "\r\n") {
		return errors.New("user name or password holds a line break")
	}
	if _, err := c.cmd("USER", "USER "+user); err != nil {
		return err
	}
	_, err := c.cmd("PASS", "PASS "+password)
	return err
}

// Stat returns the number of messages and their total size.
func (c *POP3) Stat() (count int, size int64, err error) {
	text, err := c.cmd("STAT", "STAT")
	if err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscanf(text, "%d %d", &count, &size); err != nil {
		return 0, 0, fmt.Errorf("STAT: unexpected response %q", text)
	}
	return count, size, nil
}

// List returns the number, size and UID of every message (LIST and UIDL).
func (c *POP3) List() ([]MessageInfo, error) {
	body, err := c.multi("LIST", "LIST")
	if err != nil {
		return nil, err
	}
	var out []MessageInfo
	for _, l := range strings.Split(strings.TrimSuffix(string(body), "\r\n"), "\r\n") {
		if l == "" {
			continue
		}
		var m MessageInfo
		if _, err := fmt.Sscanf(l, "%d %d", &m.Number, &m.Size); err != nil {
			return nil, fmt.Errorf("LIST: unexpected line %q", l)
		}
		out = append(out, m)
	}
	body, err = c.multi("UIDL", "UIDL")
	if err != nil {
		return out, nil // UIDL is optional (RFC 1939 §7)
	}
	uids := map[int]string{}
	for _, l := range strings.Split(string(body), "\r\n") {
		if n, uid, ok := strings.Cut(l, " "); ok {
			if i, err := strconv.Atoi(n); err == nil {
				uids[i] = uid
			}
		}
	}
	for i := range out {
		out[i].UID = uids[out[i].Number]
	}
	return out, nil
}

// Retr returns message n exactly as stored, byte-stuffing undone.
func (c *POP3) Retr(n int) ([]byte, error) {
	return c.multi("RETR", "RETR "+strconv.Itoa(n))
}

// Top returns the header of message n and the first lines of its body.
func (c *POP3) Top(n, lines int) ([]byte, error) {
	return c.multi("TOP", fmt.Sprintf("TOP %d %d", n, lines))
}

// Dele marks message n for deletion at Quit.
func (c *POP3) Dele(n int) error {
	_, err := c.cmd("DELE", "DELE "+strconv.Itoa(n))
	return err
}

// Rset unmarks every message.
func (c *POP3) Rset() error {
	_, err := c.cmd("RSET", "RSET")
	return err
}

// Noop keeps the session alive.
func (c *POP3) Noop() error {
	_, err := c.cmd("NOOP", "NOOP")
	return err
}

// Quit ends the session; the server removes the marked messages now, and
// an error means they may still be there.
func (c *POP3) Quit() error {
	defer c.nc.Close()
	_, err := c.cmd("QUIT", "QUIT")
	return err
}

// cmd sends a command and reads its one-line status; name is what errors
// call the command (never the password).
func (c *POP3) cmd(name, line string) (string, error) {
	c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	if _, err := c.nc.Write([]byte(line + "\r\n")); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return c.status(name)
}

// status reads a "+OK" or "-ERR" line.
func (c *POP3) status(name string) (string, error) {
	l, err := c.line()
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if rest, ok := strings.CutPrefix(l, "+OK"); ok {
		return strings.TrimPrefix(rest, " "), nil
	}
	if rest, ok := strings.CutPrefix(l, "-ERR"); ok {
		e := &POP3Error{Command: name, Text: strings.TrimPrefix(rest, " ")}
		if strings.HasPrefix(e.Text, "[") {
			if end := strings.IndexByte(e.Text, ']'); end > 0 {
				e.Code = e.Text[1:end]
			}
		}
		return "", e
	}
	return "", fmt.Errorf("%s: not a POP3 response: %q", name, l)
}

// multi sends a command and reads its multi-line response, undoing the
// byte-stuffing; lines keep their CRLF.
func (c *POP3) multi(name, line string) ([]byte, error) {
	if _, err := c.cmd(name, line); err != nil {
		return nil, err
	}
	var body bytes.Buffer
	var l []byte
	for {
		c.nc.SetReadDeadline(time.Now().Add(c.timeout))
		l = l[:0]
		for {
			frag, err := c.br.ReadSlice('\n')
			l = append(l, frag...)
			if err == bufio.ErrBufferFull {
				continue // a long line, read whole
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			break
		}
		if string(l) == ".\r\n" || string(l) == ".\n" {
			return body.Bytes(), nil
		}
		if l[0] == '.' {
			l = l[1:]
		}
		body.Write(l)
	}
}

func (c *POP3) line() (string, error) {
	c.nc.SetReadDeadline(time.Now().Add(c.timeout))
	l, err := c.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(l, "\r\n"), nil
}
