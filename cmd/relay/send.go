package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/relay-mta/relay/client"
	"github.com/relay-mta/relay/envelope"
	"github.com/urfave/cli/v3"
)

func sendCommand() *cli.Command {
	return &cli.Command{
		Name:  "send",
		Usage: "compose a message (body from stdin) and submit it over SMTP",
		Description: "Composes an RFC 5322 message from the flags, with the body read from standard\n" +
			"input, and submits it; prints the queue ID the server gives. With --raw, standard\n" +
			"input is the whole message and is sent as it is. Exits non-zero with the\n" +
			"server's reply if anything is refused.",
		Flags: []cli.Flag{
			serverFlag("submit to `HOST:PORT`"),
			&cli.StringFlag{Name: "from", Usage: "sender `ADDRESS` (envelope and From field)"},
			&cli.StringSliceFlag{Name: "to", Usage: "recipient `ADDRESS` (repeat for more)"},
			&cli.StringFlag{Name: "subject", Usage: "subject `TEXT` (any UTF-8)"},
			&cli.StringFlag{Name: "route", Usage: "source route `@h1,@h2` to put in front of every recipient"},
			&cli.BoolFlag{Name: "starttls", Usage: "require STARTTLS"},
			&cli.BoolFlag{Name: "tls", Usage: "implicit TLS (a listen_tls port, RFC 8314)"},
			&cli.BoolFlag{Name: "require-tls", Usage: "send with REQUIRETLS (RFC 8689): only ever relayed over verified TLS, else returned; needs --starttls or --tls"},
			clientCAFlag,
			clientUserFlag,
			clientPwFlag,
			&cli.StringSliceFlag{Name: "header", Usage: "add a header field `\"Name: value\"` (repeat for more)"},
			&cli.StringSliceFlag{Name: "attach", Usage: "attach `FILE` (repeat for more)"},
			&cli.BoolFlag{Name: "raw", Usage: "standard input is a whole message; send it as it is"},
			&cli.DurationFlag{Name: "timeout", Value: time.Minute, Usage: "give up on a silent server after this long"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if err := runSend(ctx, cmd); err != nil {
				return fmt.Errorf("send: %w", err)
			}
			return nil
		},
	}
}

func runSend(ctx context.Context, cmd *cli.Command) error {
	server, fromText, toTexts := cmd.String("server"), cmd.String("from"), cmd.StringSlice("to")
	switch {
	case server == "":
		return errors.New("missing --server HOST:PORT")
	case fromText == "":
		return errors.New("missing --from ADDRESS")
	case len(toTexts) == 0:
		return errors.New("missing --to ADDRESS: give at least one recipient")
	case cmd.Bool("tls") && cmd.Bool("starttls"):
		return errors.New("--tls (implicit TLS) and --starttls do not go together: a listen_tls port takes --tls")
	case cmd.Bool("raw") && (cmd.IsSet("subject") || cmd.IsSet("header") || cmd.IsSet("attach")):
		return errors.New("--raw sends standard input as it is; --subject, --header and --attach cannot be used with it")
	}
	opts := client.SubmitOptions{Addr: server, TLS: cmd.Bool("tls"), StartTLS: cmd.Bool("starttls"), Timeout: cmd.Duration("timeout"), RequireTLS: cmd.Bool("require-tls")}
	// The EHLO name goes into the server's Received header: this host's
	// name says more than go-smtp's default "localhost" (when it is a
	// valid domain, which envelope checks as part of an address).
	if h, err := os.Hostname(); err == nil {
		if _, err := envelope.ParseReversePath("<postmaster@"+h+">", false); err == nil {
			opts.LocalName = h
		}
	}
	var err error
	if opts.TLSConfig, err = clientTLSConfig(cmd); err != nil {
		return err
	}
	if user := cmd.String("user"); user != "" {
		opts.Username = user
		if opts.Password, err = clientPassword(cmd); err != nil {
			return err
		}
	}

	var msg []byte
	var fromAddr string
	var toAddrs []string
	if cmd.Bool("raw") {
		if msg, err = readBody(); err != nil {
			return err
		}
		fromAddr, toAddrs = addrOnly(fromText), make([]string, len(toTexts))
		for i, t := range toTexts {
			toAddrs[i] = addrOnly(t)
		}
	} else {
		m := &client.Message{From: fromText, To: toTexts, Subject: cmd.String("subject")}
		for _, h := range cmd.StringSlice("header") {
			hdr, err := client.ParseHeader(h)
			if err != nil {
				return fmt.Errorf("--header: %w", err)
			}
			m.Headers = append(m.Headers, hdr)
		}
		for _, path := range cmd.StringSlice("attach") {
			data, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("--attach: %w", err)
			}
			m.Attachments = append(m.Attachments, client.Attachment{Filename: path, Data: data})
		}
		body, err := readBody()
		if err != nil {
			return err
		}
		m.Text = string(body)
		msg, from, to, err := client.Compose(m)
		if err != nil {
			return err
		}
		toAddrs := make([]string, len(to))
		for i, a := range to {
			toAddrs[i] = a.Address
		}
		return submit(ctx, opts, from.Address, toAddrs, cmd.String("route"), msg)
	}
	return submit(ctx, opts, fromAddr, toAddrs, cmd.String("route"), msg)
}

// submit builds the envelope, sends, and prints the queue ID.
func submit(ctx context.Context, opts client.SubmitOptions, fromAddr string, toAddrs []string, route string, msg []byte) error {
	from, err := envelope.ParseReversePath("<"+fromAddr+">", true)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	rcpts, err := recipientPaths(toAddrs, route)
	if err != nil {
		return err
	}
	reply, id, err := client.Submit(ctx, opts, from, rcpts, msg)
	if err != nil {
		return err
	}
	if id == "" {
		id = reply // a server that names no queue ID: show what it said
	}
	fmt.Println(id)
	return nil
}

// recipientPaths turns addresses into forward paths, with the source
// route in front when one is given: "@h1,@h2" and "u@d" make
// "<@h1,@h2:u@d>". Package envelope checks every part.
func recipientPaths(addrs []string, route string) ([]envelope.Path, error) {
	route = strings.TrimSpace(route)
	if route != "" && !strings.HasPrefix(route, "@") {
		return nil, fmt.Errorf("--route %q: want @host1,@host2", route)
	}
	var out []envelope.Path
	for _, a := range addrs {
		text := "<" + a + ">"
		if route != "" {
			text = "<" + route + ":" + a + ">"
		}
		p, err := envelope.ParseForwardPath(text, true)
		if err != nil {
			if route != "" {
				return nil, fmt.Errorf("--route %s with --to %s: %w", route, a, err)
			}
			return nil, fmt.Errorf("--to %s: %w", a, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// addrOnly takes the address out of "Name <a@b>" for the envelope of a
// --raw message; a bare address stays as it is.
func addrOnly(s string) string {
	if i := strings.LastIndexByte(s, '<'); i >= 0 {
		if j := strings.IndexByte(s[i:], '>'); j > 0 {
			return s[i+1 : i+j]
		}
	}
	return strings.TrimSpace(s)
}

// readBody reads standard input, telling a person at a terminal how to
// end it.
func readBody() ([]byte, error) {
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		// A character device is a terminal, unless it is /dev/null.
		if null, err := os.Stat(os.DevNull); err != nil || !os.SameFile(fi, null) {
			fmt.Fprintln(os.Stderr, "relay send: reading the message body; end it with Ctrl-D")
		}
	}
	b, err := io.ReadAll(os.Stdin)
	if err != nil {
		return nil, fmt.Errorf("reading standard input: %w", err)
	}
	return b, nil
}
