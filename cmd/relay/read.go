package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/relay-mta/relay/client"
	"github.com/urfave/cli/v3"
)

func readCommand() *cli.Command {
	return &cli.Command{
		Name:  "read",
		Usage: "list, show and delete the messages of a mailbox over POP3",
		Description: "Without --show or --delete, lists the messages: number, date, sender, subject\n" +
			"and size. Message numbers are those of the listing; a message deleted\n" +
			"renumbers the ones after it.",
		Flags: []cli.Flag{
			serverFlag("POP3 server `HOST:PORT`"),
			clientUserFlag,
			clientPwFlag,
			&cli.BoolFlag{Name: "starttls", Usage: "require STLS before logging in"},
			&cli.BoolFlag{Name: "tls", Usage: "implicit TLS (a listen_tls port)"},
			clientCAFlag,
			&cli.BoolFlag{Name: "list", Usage: "list the messages (the default)"},
			&cli.StringFlag{Name: "show", Usage: "print message `N` (or last, or all), decoded"},
			&cli.BoolFlag{Name: "raw", Usage: "with --show: print the message exactly as stored"},
			&cli.StringFlag{Name: "save", Usage: "with --show: write the attachments into `DIR`"},
			&cli.StringFlag{Name: "delete", Usage: "delete message `N` (or last, or all)"},
			&cli.BoolFlag{Name: "all", Usage: "with --show or --delete: every message (--all --delete empties the mailbox)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON for scripts"},
			&cli.DurationFlag{Name: "timeout", Value: time.Minute, Usage: "give up on a silent server after this long"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if err := runRead(ctx, cmd); err != nil {
				return fmt.Errorf("read: %w", err)
			}
			return nil
		},
	}
}

// readOp is what one relay read does.
type readOp struct {
	serverAddr string
	show, del  int  // message numbers (when their flag is set)
	all        bool // --all
	showAll    bool // --show with --all
	deleteAll  bool // --delete with --all
	listing    bool // neither --show nor --delete
	raw, json  bool
	saveDir    string
}

func runRead(ctx context.Context, cmd *cli.Command) error {
	op := readOp{
		serverAddr: cmd.String("server"), all: cmd.Bool("all"),
		raw: cmd.Bool("raw"), json: cmd.Bool("json"), saveDir: cmd.String("save"),
	}
	var err error
	if op.show, op.showAll, err = messageArg(cmd, "show"); err != nil {
		return err
	}
	if op.del, op.deleteAll, err = messageArg(cmd, "delete"); err != nil {
		return err
	}
	op.listing = !cmd.IsSet("show") && !cmd.IsSet("delete")
	user := cmd.String("user")
	switch {
	case op.serverAddr == "":
		return errors.New("missing --server HOST:PORT")
	case user == "":
		return errors.New("missing --user NAME")
	case op.all && op.listing:
		return errors.New("--all goes with --show or --delete (--all --delete empties the mailbox)")
	case (op.raw || op.saveDir != "") && !cmd.IsSet("show"):
		return errors.New("--raw and --save go with --show N")
	case op.raw && op.json:
		return errors.New("--raw and --json do not go together")
	}
	pw, err := clientPassword(cmd)
	if err != nil {
		return err
	}
	tlsConfig, err := clientTLSConfig(cmd)
	if err != nil {
		return err
	}
	c, err := client.DialPOP3(ctx, client.POP3Options{
		Addr: op.serverAddr, TLS: cmd.Bool("tls"), StartTLS: cmd.Bool("starttls"),
		TLSConfig: tlsConfig, Timeout: cmd.Duration("timeout"),
	})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Login(user, pw); err != nil {
		return fmt.Errorf("login as %s at %s: %w", user, op.serverAddr, err)
	}
	list, err := c.List()
	if err != nil {
		return err
	}
	for _, n := range []*int{&op.show, &op.del} {
		if *n == lastMessage {
			if len(list) == 0 {
				return errors.New("the mailbox is empty: there is no last message")
			}
			*n = list[len(list)-1].Number
		}
	}
	if op.listing {
		if err := printListing(c, list, op.json); err != nil {
			return err
		}
		return c.Quit()
	}
	if cmd.IsSet("show") {
		nums := []int{op.show}
		if op.showAll {
			nums = numbers(list)
		}
		if err := showMessages(c, list, nums, op); err != nil {
			return err
		}
	}
	if cmd.IsSet("delete") {
		nums := []int{op.del}
		if op.deleteAll {
			nums = numbers(list)
		}
		for _, n := range nums {
			if err := c.Dele(n); err != nil {
				return err
			}
		}
		// The server removes them only now, at QUIT, all together.
		if err := c.Quit(); err != nil {
			return fmt.Errorf("messages not deleted: %w", err)
		}
		switch {
		case op.json:
			return printJSON(map[string]any{"deleted": nums})
		case len(nums) == 1 && !op.deleteAll:
			fmt.Printf("deleted message %d\n", nums[0])
		default:
			fmt.Printf("deleted %d messages\n", len(nums))
		}
		return nil
	}
	return c.Quit()
}

// lastMessage is what messageArg returns for "last": the highest
// message number, known once the mailbox is listed.
const lastMessage = -1

// messageArg reads --show or --delete: a message number, "last", or "all" (also
// what a bare --show or --delete means next to --all; see
// expandReadArgs).
func messageArg(cmd *cli.Command, name string) (n int, all bool, err error) {
	if !cmd.IsSet(name) {
		return 0, false, nil
	}
	v := cmd.String(name)
	if v == "all" || (v == "" && cmd.Bool("all")) {
		return 0, true, nil
	}
	if cmd.Bool("all") {
		return 0, false, fmt.Errorf("--%s %s with --all: give a message number or --all, not both", name, v)
	}
	if v == "last" {
		return lastMessage, false, nil
	}
	n, err = strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, false, fmt.Errorf("--%s %q: want a message number (1, 2, ...), last or all", name, v)
	}
	return n, false, nil
}

// expandReadArgs lets --show and --delete stand without a number next to
// --all ("relay read --all --delete"): the flag parser wants a value
// after them, so a bare one gets "all". Other commands' arguments are
// returned as they are.
func expandReadArgs(args []string) []string {
	if len(args) < 2 || args[1] != "read" || !slices.ContainsFunc(args, func(a string) bool { return a == "--all" || a == "-all" }) {
		return args
	}
	out := make([]string, 0, len(args)+2)
	for i, a := range args {
		out = append(out, a)
		bare := a == "--show" || a == "-show" || a == "--delete" || a == "-delete"
		if bare && (i+1 == len(args) || strings.HasPrefix(args[i+1], "-")) {
			out = append(out, "all")
		}
	}
	return out
}

func numbers(list []client.MessageInfo) []int {
	out := make([]int, len(list))
	for i, m := range list {
		out[i] = m.Number
	}
	return out
}

// listEntry is one message in the listing, as printed with --json.
type listEntry struct {
	Number  int       `json:"number"`
	UID     string    `json:"uid"`
	Size    int64     `json:"size"`
	Date    time.Time `json:"date,omitzero"`
	From    string    `json:"from"`
	Subject string    `json:"subject"`
}

// printListing prints one line per message; the headers come from TOP, so
// a long message costs no more than a short one.
func printListing(c *client.POP3, list []client.MessageInfo, asJSON bool) error {
	entries := make([]listEntry, 0, len(list))
	for _, m := range list {
		top, err := c.Top(m.Number, 0)
		if err != nil {
			return err
		}
		e := listEntry{Number: m.Number, UID: m.UID, Size: m.Size}
		if p, err := client.Parse(top); err == nil {
			e.Date, e.From, e.Subject = p.Date, p.From, p.Subject
		}
		entries = append(entries, e)
	}
	if asJSON {
		return printJSON(entries)
	}
	if len(entries) == 0 {
		fmt.Println("no messages")
		return nil
	}
	for _, e := range entries {
		date := "-"
		if !e.Date.IsZero() {
			date = e.Date.Local().Format("2006-01-02 15:04")
		}
		fmt.Printf("%3d  %-16s  %s  %s  %s\n", e.Number, date, column(e.From, 28), column(e.Subject, 40), humanSize(e.Size))
	}
	return nil
}

// shownMessage is a message as printed with --show --json.
type shownMessage struct {
	Number      int               `json:"number"`
	UID         string            `json:"uid"`
	Size        int64             `json:"size"`
	Date        time.Time         `json:"date,omitzero"`
	From        string            `json:"from"`
	To          string            `json:"to"`
	Subject     string            `json:"subject"`
	Text        string            `json:"text"`
	Attachments []shownAttachment `json:"attachments"`
}

type shownAttachment struct {
	Filename    string `json:"filename"`
	ContentType string `json:"content_type"`
	Size        int    `json:"size"`
	SavedAs     string `json:"saved_as,omitempty"`
}

func showMessages(c *client.POP3, list []client.MessageInfo, nums []int, op readOp) error {
	var shown []shownMessage
	for i, n := range nums {
		raw, err := c.Retr(n)
		if err != nil {
			return err
		}
		if op.raw {
			os.Stdout.Write(raw)
			continue
		}
		p, err := client.Parse(raw)
		if err != nil {
			return fmt.Errorf("message %d: %w", n, err)
		}
		s := shownMessage{Number: n, Size: int64(len(raw)), Date: p.Date, From: p.From, To: p.To, Subject: p.Subject,
			Text: strings.ReplaceAll(p.Text, "\r\n", "\n"), Attachments: []shownAttachment{}}
		for _, m := range list {
			if m.Number == n {
				s.UID = m.UID
			}
		}
		for _, a := range p.Attachments {
			sa := shownAttachment{Filename: a.Filename, ContentType: a.ContentType, Size: len(a.Data)}
			if op.saveDir != "" {
				if sa.SavedAs, err = saveAttachment(op.saveDir, a); err != nil {
					return err
				}
			}
			s.Attachments = append(s.Attachments, sa)
		}
		if op.json {
			shown = append(shown, s)
			continue
		}
		if i > 0 {
			fmt.Println(strings.Repeat("-", 72))
		}
		printShown(os.Stdout, s)
	}
	if op.json {
		if len(shown) == 1 && !op.showAll {
			return printJSON(shown[0])
		}
		return printJSON(shown)
	}
	return nil
}

func printShown(w io.Writer, s shownMessage) {
	if !s.Date.IsZero() {
		fmt.Fprintf(w, "Date:    %s\n", s.Date.Format(time.RFC1123Z))
	}
	oneLine := func(v string) string { return strings.ReplaceAll(printable(v), "\n", " ") }
	fmt.Fprintf(w, "From:    %s\nTo:      %s\nSubject: %s\n\n", oneLine(s.From), oneLine(s.To), oneLine(s.Subject))
	fmt.Fprint(w, printable(s.Text))
	if s.Text != "" && !strings.HasSuffix(s.Text, "\n") {
		fmt.Fprintln(w)
	}
	for i, a := range s.Attachments {
		fmt.Fprintf(w, "[attachment %d: %s, %s, %s", i+1, printable(a.Filename), printable(a.ContentType), humanSize(int64(a.Size)))
		if a.SavedAs != "" {
			fmt.Fprintf(w, ", saved as %s", a.SavedAs)
		}
		fmt.Fprintln(w, "]")
	}
}

// saveAttachment writes a into dir, which it creates if need be, under
// its own base name (never a path the sender chose). It never replaces a
// file: when the name is taken it picks the first free one of name-1.ext,
// name-2.ext, ...
func saveAttachment(dir string, a client.Attachment) (string, error) {
	name := filepath.Base(strings.ReplaceAll(a.Filename, "\\", "/"))
	if name == "." || name == "/" || name == ".." || name == "" {
		name = "attachment"
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("--save: %w", err)
	}
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	for n := 0; n < maxSaveNames; n++ {
		path := filepath.Join(dir, name)
		if n > 0 {
			path = filepath.Join(dir, fmt.Sprintf("%s-%d%s", stem, n, ext))
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("--save: %w", err)
		}
		if _, err := f.Write(a.Data); err != nil {
			f.Close()
			return "", fmt.Errorf("--save: %w", err)
		}
		if err := f.Close(); err != nil {
			return "", fmt.Errorf("--save: %w", err)
		}
		return path, nil
	}
	return "", fmt.Errorf("--save: %s and %d more names for it are taken in %s", name, maxSaveNames-1, dir)
}

// maxSaveNames bounds the names saveAttachment tries for one attachment.
const maxSaveNames = 1000

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// column fits s into n characters: shortened, or padded with spaces.
func column(s string, n int) string {
	s = printable(s)
	if c := utf8.RuneCountInString(s); c <= n {
		return s + strings.Repeat(" ", n-c)
	}
	return string([]rune(s)[:n-1]) + "…"
}

// printable replaces control characters (other than newline and tab) so
// that a message cannot send escape sequences to the reader's terminal.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if (r < ' ' && r != '\n' && r != '\t') || (r >= 0x7f && r < 0xa0) || r == utf8.RuneError {
			return '?'
		}
		return r
	}, s)
}

func humanSize(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
}
