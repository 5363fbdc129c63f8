package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/relay-mta/relay/client"
	"github.com/relay-mta/relay/relay/admin/api"
	"github.com/urfave/cli/v3"
)

// queueCommand is `relay queue`: the operators' view of a running
// daemon's queue, through its admin socket (the daemon alone opens the
// spool).
func queueCommand() *cli.Command {
	ids := func(name, usage string) *cli.Command {
		return &cli.Command{
			Name: name, Usage: usage, ArgsUsage: "ID...",
			Action: func(ctx context.Context, cmd *cli.Command) error { return queueAct(ctx, cmd, name) },
		}
	}
	return &cli.Command{
		Name:  "queue",
		Usage: "look at and manage the running daemon's queue (through its admin socket)",
		Description: "IDs may be abbreviated to any unique prefix. The daemon is found through\n" +
			"--admin SOCKET, or the [admin] socket of --config FILE (default: the embedded\n" +
			"defaults, ./relay-data/admin.sock).",
		Flags: []cli.Flag{
			configFlag,
			&cli.StringFlag{Name: "admin", Usage: "the daemon's admin `SOCKET` (instead of the one --config names)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON instead of tables (the admin API's format: docs/design.md §13)"},
		},
		Commands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list queued messages with their recipients, oldest first (like mailq)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "from", Usage: "only senders containing `TEXT`"},
					&cli.StringFlag{Name: "to", Usage: "only messages with a recipient containing `TEXT`"},
					&cli.StringFlag{Name: "status", Usage: "only messages with a recipient in `STATUS` (pending, deferred, delivered, failed), or held ones (held)"},
					&cli.DurationFlag{Name: "older-than", Usage: "only messages accepted at least `DURATION` ago (90s, 30m, 2h)"},
					&cli.StringFlag{Name: "hop", Usage: "only messages with a recipient still to go through a next hop containing `TEXT`"},
				},
				Action: queueList,
			},
			{Name: "show", Usage: "show a message: envelope, headers, recipients and schedule, history", ArgsUsage: "ID", Action: queueShow},
			{
				Name: "retry", Usage: "attempt messages now, whatever their backoff says", ArgsUsage: "ID...|--all",
				Flags: []cli.Flag{&cli.BoolFlag{Name: "all", Usage: "every queued message that is not held"}},
				Action: func(ctx context.Context, cmd *cli.Command) error {
					if cmd.Bool("all") {
						return queueRetryAll(ctx, cmd)
					}
					return queueAct(ctx, cmd, api.ActionRetry)
				},
			},
			ids(api.ActionHold, "stop attempting messages until they are released"),
			ids(api.ActionRelease, "undo hold: the messages are due now"),
			ids(api.ActionDelete, "remove messages from the queue without telling the sender (no DSN)"),
			ids(api.ActionBounce, "fail messages now: their senders get a DSN"),
			queueTransferCommand(),
			queueDrainCommand(),
			{Name: "stats", Usage: "count the queue by status and next hop; its oldest message; spool size", Action: queueStats},
			{
				Name:  "shape",
				Usage: "recipients to deliver by destination and age, the most loaded first (Postfix's qshape)",
				Description: "Counts the recipients still to be delivered (pending or deferred) by the\n" +
					"destination domain (or the next hop, --by hop) and the age of their message:\n" +
					"0-5m, 5-10m, 10-20m, 20-40m, 40-80m, 80-160m, 160-320m, 320m+. A destination\n" +
					"whose mail piles up in the right-hand columns is the one that is not taking it.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "by", Value: "domain", Usage: "group by `domain` (of each recipient) or hop (the next hop)"},
					&cli.BoolFlag{Name: "held", Usage: "count held messages too"},
				},
				Action: queueShape,
			},
		},
	}
}

// adminClient connects to the socket named by --admin, or by the config.
func adminClient(cmd *cli.Command) (*client.Admin, error) {
	if sock := cmd.String("admin"); sock != "" {
		if cmd.String("config") != "" {
			return nil, errors.New("give --admin or --config, not both")
		}
		return client.NewAdmin(sock), nil
	}
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, err
	}
	if cfg.Admin.Socket == "" {
		name := cfg.File
		if name == "" {
			name = "the configuration"
		}
		return nil, fmt.Errorf("%s has no admin socket ([admin] socket is empty)", name)
	}
	return client.NewAdmin(cfg.Admin.Socket), nil
}

func printQueueJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func queueList(ctx context.Context, cmd *cli.Command) error {
	if cmd.Args().Len() > 0 {
		return fmt.Errorf("queue list takes no arguments (filters are flags: --from, --to, --status, --older-than, --hop)")
	}
	a, err := adminClient(cmd)
	if err != nil {
		return err
	}
	f := api.Filter{From: cmd.String("from"), To: cmd.String("to"), Status: cmd.String("status"), OlderThan: cmd.Duration("older-than"), Hop: cmd.String("hop")}
	msgs, err := a.List(ctx, f)
	if err != nil {
		return fmt.Errorf("queue list: %w", err)
	}
	if cmd.Bool("json") {
		if msgs == nil {
			msgs = []api.Message{}
		}
		return printQueueJSON(msgs)
	}
	if len(msgs) == 0 && f != (api.Filter{}) {
		// Not "Mail queue is empty": the queue may well hold other mail.
		fmt.Println("no queued message matches")
		return nil
	}
	writeList(os.Stdout, msgs, time.Now())
	return nil
}

// writeList prints the queue the way mailq does: one line per message,
// then its recipients, indented, with their state.
func writeList(w io.Writer, msgs []api.Message, now time.Time) {
	if len(msgs) == 0 {
		fmt.Fprintln(w, "Mail queue is empty")
		return
	}
	fmt.Fprintf(w, "%-13s  %6s  %7s  %s\n", "ID", "AGE", "SIZE", "SENDER / RECIPIENTS")
	open := 0
	for _, m := range msgs {
		held := ""
		if m.Held {
			held = "  [held]"
		}
		if l := levelTags(m); l != "" {
			held += "  [" + l + "]"
		}
		fmt.Fprintf(w, "%-13s  %6s  %7s  %s%s\n", m.ID, age(now.Sub(m.Created)), size(m.Size), addr(m.From), held)
		for _, r := range m.Recipients {
			state := r.Status
			switch r.Status {
			case api.StatusPending, api.StatusDeferred:
				open++
				switch {
				case m.Held:
					state += ", held"
				case r.NextAttempt != nil:
					state += ", " + due(r.NextAttempt.Sub(now))
				}
			}
			if r.Attempts > 0 {
				state += ", " + plural(r.Attempts, "attempt")
			}
			fmt.Fprintf(w, "%33s%s  (%s)\n", "", addr(r.Address), state)
			if r.LastReply != "" && r.Status != api.StatusDelivered {
				fmt.Fprintf(w, "%35s%s\n", "", r.LastReply)
			}
		}
	}
	fmt.Fprintf(w, "-- %s, %s to deliver\n", plural(len(msgs), "message"), plural(open, "recipient"))
}

// levelTags is the short form of a message's levels of service for the
// list: "prio 9, by 12:30:00Z R, requiretls".
func levelTags(m api.Message) string {
	var tags []string
	if m.Priority != 0 {
		tags = append(tags, fmt.Sprintf("prio %+d", m.Priority))
	}
	if m.DeliverBy != nil {
		tags = append(tags, fmt.Sprintf("by %s %s", m.DeliverBy.UTC().Format("15:04:05Z"), m.ByMode))
	}
	if m.RequireTLS {
		tags = append(tags, "requiretls")
	}
	return strings.Join(tags, ", ")
}

// levelText is the long form for show.
func levelText(m *api.Message, now time.Time) string {
	var parts []string
	if m.Priority != 0 {
		parts = append(parts, fmt.Sprintf("MT-PRIORITY %+d", m.Priority))
	}
	if m.DeliverBy != nil {
		what := "then returned"
		if m.ByMode == "N" {
			what = "then the sender is notified"
		}
		left := "passed"
		if d := m.DeliverBy.Sub(now); d > 0 {
			left = "in " + age(d)
		}
		parts = append(parts, fmt.Sprintf("deliver by %s (%s), %s", stamp(*m.DeliverBy), left, what))
	}
	if m.RequireTLS {
		parts = append(parts, "REQUIRETLS: only over verified TLS")
	}
	return strings.Join(parts, "; ")
}

func queueShow(ctx context.Context, cmd *cli.Command) error {
	if cmd.Args().Len() != 1 {
		return errors.New("queue show: give one message ID")
	}
	a, err := adminClient(cmd)
	if err != nil {
		return err
	}
	m, err := a.Show(ctx, cmd.Args().First())
	if err != nil {
		return fmt.Errorf("queue show: %w", err)
	}
	if cmd.Bool("json") {
		return printQueueJSON(m)
	}
	writeShow(os.Stdout, m, time.Now())
	return nil
}

// writeShow prints everything known about one message.
func writeShow(w io.Writer, m *api.Message, now time.Time) {
	state := "queued"
	if m.Held {
		state += ", held"
	}
	if m.Retired != nil {
		state = fmt.Sprintf("retired %s (%s ago); kept for the history window", stamp(*m.Retired), age(now.Sub(*m.Retired)))
	}
	fmt.Fprintf(w, "Message %s: %s\n", m.ID, state)
	fmt.Fprintf(w, "  from:      %s\n", addr(m.From))
	fmt.Fprintf(w, "  accepted:  %s (%s ago) from %s, HELO %s", stamp(m.Created), age(now.Sub(m.Created)), m.Client, m.Helo)
	if m.AuthUser != "" {
		fmt.Fprintf(w, ", AUTH %s", m.AuthUser)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  size:      %d bytes, %d Received headers", m.Size, m.Hops)
	if m.MailParams != "" {
		fmt.Fprintf(w, "; MAIL parameters %s", m.MailParams)
	}
	fmt.Fprintln(w)
	if l := levelText(m, now); l != "" {
		fmt.Fprintf(w, "  service:   %s\n", l)
	}
	if m.Headers != "" {
		fmt.Fprintln(w, "Headers:")
		for _, l := range strings.Split(strings.TrimRight(m.Headers, "\r\n"), "\r\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	fmt.Fprintln(w, "Recipients:")
	for _, r := range m.Recipients {
		fmt.Fprintf(w, "  [%d] %s: %s, %s", r.Index, addr(r.Address), r.Status, plural(r.Attempts, "attempt"))
		if r.Params != "" {
			fmt.Fprintf(w, " (%s)", r.Params)
		}
		fmt.Fprintln(w)
		if r.LastReply != "" {
			fmt.Fprintf(w, "      last reply:   %s\n", r.LastReply)
		}
		if p := tlsPolicy(m, r); p != "" {
			fmt.Fprintf(w, "      tls policy:   %s\n", p)
		}
		if r.NextHop != "" {
			fmt.Fprintf(w, "      next hop:     %s\n", r.NextHop)
		}
		switch {
		case r.NextAttempt != nil:
			fmt.Fprintf(w, "      next attempt: %s (%s)\n", stamp(*r.NextAttempt), due(r.NextAttempt.Sub(now)))
			if len(r.Schedule) > 1 {
				var later []string
				for _, t := range r.Schedule[1:] {
					later = append(later, stamp(t))
				}
				fmt.Fprintf(w, "      if deferred:  %s (±10%%)\n", strings.Join(later, ", "))
			}
		case m.Held && m.Retired == nil && (r.Status == api.StatusPending || r.Status == api.StatusDeferred):
			fmt.Fprintf(w, "      next attempt: none while held\n")
		}
	}
	fmt.Fprintln(w, "History:")
	for _, e := range m.Events {
		who := ""
		if e.Recipient != "" {
			who = addr(e.Recipient) + ": "
		}
		fmt.Fprintf(w, "  %s  %-9s %s%s\n", stamp(e.At), e.Kind, who, e.Text)
	}
}

// queueAct performs one action on each message named on the command line.
func queueAct(ctx context.Context, cmd *cli.Command, action string) error {
	args := cmd.Args().Slice()
	if len(args) == 0 {
		return fmt.Errorf("queue %s: give one or more message IDs", action)
	}
	a, err := adminClient(cmd)
	if err != nil {
		return err
	}
	changes := []api.Change{}
	var failed []string
	for _, id := range args {
		c, err := a.Act(ctx, action, id)
		if errors.Is(err, client.ErrDaemonDown) {
			return fmt.Errorf("queue %s: %w", action, err) // no use trying the others
		}
		if err != nil {
			failed = append(failed, id)
			if len(args) > 1 {
				fmt.Fprintf(os.Stderr, "relay: queue %s %s: %v\n", action, id, err)
				continue
			}
			return fmt.Errorf("queue %s %s: %w", action, id, err)
		}
		changes = append(changes, *c)
		if !cmd.Bool("json") {
			fmt.Printf("%s %s: %s\n", action, c.ID, c.Result)
		}
	}
	if cmd.Bool("json") {
		if err := printQueueJSON(changes); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("queue %s: %d of %d messages failed: %s", action, len(failed), len(args), strings.Join(failed, " "))
	}
	return nil
}

func queueRetryAll(ctx context.Context, cmd *cli.Command) error {
	if cmd.Args().Len() > 0 {
		return errors.New("queue retry: give message IDs or --all, not both")
	}
	a, err := adminClient(cmd)
	if err != nil {
		return err
	}
	changes, err := a.RetryAll(ctx)
	if err != nil {
		return fmt.Errorf("queue retry --all: %w", err)
	}
	if cmd.Bool("json") {
		if changes == nil {
			changes = []api.Change{}
		}
		return printQueueJSON(changes)
	}
	n := 0
	for _, c := range changes {
		fmt.Printf("retry %s: %s\n", c.ID, c.Result)
		n += c.Recipients
	}
	fmt.Printf("retry: %s, %s due now\n", plural(len(changes), "message"), plural(n, "recipient"))
	return nil
}

func queueStats(ctx context.Context, cmd *cli.Command) error {
	if cmd.Args().Len() > 0 {
		return errors.New("queue stats takes no arguments")
	}
	a, err := adminClient(cmd)
	if err != nil {
		return err
	}
	st, err := a.Stats(ctx)
	if err != nil {
		return fmt.Errorf("queue stats: %w", err)
	}
	if cmd.Bool("json") {
		return printQueueJSON(st)
	}
	w := os.Stdout
	fmt.Fprintf(w, "messages:    %d (%d held)\n", st.Messages, st.Held)
	fmt.Fprintf(w, "recipients:  %d pending, %d deferred (and %d delivered, %d failed of partly delivered messages)\n",
		st.Recipients[api.StatusPending], st.Recipients[api.StatusDeferred], st.Recipients[api.StatusDelivered], st.Recipients[api.StatusFailed])
	if st.Oldest != nil {
		fmt.Fprintf(w, "oldest:      %s, accepted %s ago\n", st.Oldest.ID, age(time.Duration(st.Oldest.AgeSeconds*float64(time.Second))))
	} else {
		fmt.Fprintf(w, "oldest:      none (the queue is empty)\n")
	}
	fmt.Fprintf(w, "spool:       %s on disk\n", size(st.SpoolBytes))
	if len(st.ByHop) > 0 {
		fmt.Fprintln(w, "to deliver, by next hop:")
		hops := make([]string, 0, len(st.ByHop))
		for h := range st.ByHop {
			hops = append(hops, h)
		}
		sort.Slice(hops, func(i, j int) bool {
			return st.ByHop[hops[i]] > st.ByHop[hops[j]] || st.ByHop[hops[i]] == st.ByHop[hops[j]] && hops[i] < hops[j]
		})
		for _, h := range hops {
			fmt.Fprintf(w, "  %7d  %s\n", st.ByHop[h], h)
		}
	}
	if len(st.Hops) > 0 {
		fmt.Fprintln(w, "sessions and shaping, by next hop:")
		for _, h := range st.Hops {
			rate := h.Rate
			if rate == "" {
				rate = "unlimited"
			}
			line := fmt.Sprintf("  %d/%d sessions, %d queued, rate %s", h.Sessions, h.SessionLimit, h.Queued, rate)
			if h.ThrottleLevel > 0 {
				conf := h.ConfiguredRate
				if conf == "" {
					conf = "unlimited"
				}
				line += fmt.Sprintf(" (throttled, level %d: configured %d sessions, %s)", h.ThrottleLevel, h.Concurrency, conf)
			}
			if h.Throttled > 0 {
				line += fmt.Sprintf("; %d replies asked to slow down", h.Throttled)
			}
			fmt.Fprintf(w, "%s  %s\n", line, h.Hop)
		}
	}
	printWebhooks(w, st.Webhooks, time.Now())
	return nil
}

// printWebhooks adds the webhook backlogs to queue stats.
func printWebhooks(w io.Writer, hooks []api.Webhook, now time.Time) {
	if len(hooks) == 0 {
		return
	}
	fmt.Fprintln(w, "webhooks, events waiting to be posted:")
	for _, h := range hooks {
		line := fmt.Sprintf("  %7d  %s %s", h.Backlog, h.Name, h.URL)
		if h.Backlog > 0 {
			line += fmt.Sprintf(", oldest %s ago", age(time.Duration(h.OldestAgeSeconds*float64(time.Second))))
		}
		line += fmt.Sprintf("; %d posted", h.Posted)
		fmt.Fprintln(w, line)
		if h.Failures > 0 {
			next := ""
			if h.NextAttempt != nil {
				next = fmt.Sprintf("; next try in %s", age(h.NextAttempt.Sub(now)))
			}
			fmt.Fprintf(w, "           failing (%s): %s%s\n", plural(h.Failures, "round"), h.LastError, next)
		}
	}
}

// --- formatting ---

// addr shows an address the way mailq does; the null reverse path is <>.
func addr(a string) string {
	if a == "" {
		return "<>"
	}
	return a
}

// age renders a duration in its two largest units: 45s, 12m30s, 3h5m, 2d4h.
func age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
}

// due says when something is due relative to now.
func due(d time.Duration) string {
	if d <= 0 {
		return "due now"
	}
	return "next in " + age(d)
}

func size(n int64) string {
	switch {
	case n < 1024:
		return fmt.Sprintf("%d", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1fK", float64(n)/1024)
	case n < 1<<30:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") }

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
