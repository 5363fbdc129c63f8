package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/emersion/go-smtp"
	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/relay"
	"github.com/urfave/cli/v3"
)

func authCommand() *cli.Command {
	return &cli.Command{
		Name:  "auth",
		Usage: "check where a message comes from: DKIM, SPF, DMARC and ARC, as the relay would",
		Commands: []*cli.Command{{
			Name: "check",
			Usage: "judge the message in FILE (or on standard input) as sent by a client at --ip: print the " +
				"Authentication-Results field the relay would add, then one line per method; exit 1 when it would refuse the message",
			ArgsUsage: "[FILE]",
			Flags: []cli.Flag{
				configFlag,
				&cli.StringFlag{Name: "ip", Usage: "the client's `IP` address", Required: true},
				&cli.StringFlag{Name: "helo", Usage: "the `NAME` the client gave in EHLO", Required: true},
				&cli.StringFlag{Name: "mail-from", Usage: "the MAIL FROM `ADDR`ess; empty or <> for a bounce (then the HELO name is checked)"},
			},
			Action: authCheck,
		}},
	}
}

func authCheck(_ context.Context, cmd *cli.Command) error {
	if cmd.Args().Len() > 1 {
		return &usageError{cmd: cmd, err: errors.New("give at most one FILE")}
	}
	ip, err := netip.ParseAddr(cmd.String("ip"))
	if err != nil {
		return &usageError{cmd: cmd, err: fmt.Errorf("--ip %q is not an IP address", cmd.String("ip"))}
	}
	from := envelope.Path{} // the null path
	if s := strings.TrimSpace(cmd.String("mail-from")); s != "" && s != "<>" {
		if !strings.HasPrefix(s, "<") {
			s = "<" + s + ">"
		}
		if from, err = envelope.ParseReversePath(s, true); err != nil {
			return &usageError{cmd: cmd, err: fmt.Errorf("--mail-from: %w", err)}
		}
	}
	cfg, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	in := io.Reader(os.Stdin)
	if cmd.Args().Len() == 1 {
		f, err := os.Open(cmd.Args().First())
		if err != nil {
			return fmt.Errorf("auth check: %w", err)
		}
		defer f.Close()
		in = f
	}
	msg, err := io.ReadAll(io.LimitReader(in, cfg.SMTP.MaxMessageSize+1))
	if err != nil {
		return fmt.Errorf("auth check: read message: %w", err)
	}
	if int64(len(msg)) > cfg.SMTP.MaxMessageSize {
		return fmt.Errorf("auth check: message larger than max_message_size (%d bytes)", cfg.SMTP.MaxMessageSize)
	}
	res, err := relay.CheckAuth(cfg, relay.AuthInput{IP: ip, HELO: cmd.String("helo"), MailFrom: from, Message: crlf(msg)},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return fmt.Errorf("auth check: %w", err)
	}
	fmt.Print(strings.ReplaceAll(res.Head, "\r\n", "\n"))
	fmt.Println()
	if len(res.Results.DKIM) == 0 {
		fmt.Println("dkim=none")
	}
	for _, r := range res.Results.Resinfo() {
		fmt.Println(r)
	}
	if res.Results.ARC == "" {
		fmt.Println("arc=none")
	}
	if res.Refusal != nil {
		fmt.Println("refused:", replyText(res.Refusal))
		return errors.New("auth check: the relay would refuse this message")
	}
	fmt.Println("accepted")
	return nil
}

// crlf gives a message saved with bare LF line ends (as files usually
// are) the CRLF ones it has on the wire, which signatures are over.
func crlf(msg []byte) []byte {
	if strings.Contains(string(msg), "\r\n") {
		return msg
	}
	return []byte(strings.ReplaceAll(string(msg), "\n", "\r\n"))
}

// replyText is an SMTP refusal as the client reads it: "550 5.7.1 text".
func replyText(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	}
	return err.Error()
}
