package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// header describes the machine and the run.
type header struct {
	cpus           int
	cpuModel       string
	ramKiB         int64
	kernel         string
	goVersion      string
	postfixVersion string
	relayVersion   string
	date           time.Time
	command        string
	dataDir        string
}

func collectHeader(ctx context.Context, o options, args []string, base string) header {
	h := header{
		cpus:     runtime.NumCPU(),
		cpuModel: "unknown",
		date:     time.Now().UTC(),
		// The program's own path is a temporary file under go run: name
		// the command instead.
		command: shellJoin(append([]string{"relay-bench"}, args[1:]...)),
		dataDir: base,
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		h.ramKiB, _ = statusKiB(b, "MemTotal")
	}
	h.kernel = output(ctx, "", "uname", "-r")
	h.goVersion = output(ctx, o.repo, "go", "env", "GOVERSION")
	h.postfixVersion = strings.TrimPrefix(output(ctx, "", "/usr/sbin/postconf", "-d", "mail_version"), "mail_version = ")
	h.relayVersion = output(ctx, o.repo, "git", "describe", "--always", "--dirty")
	if fs := output(ctx, "", "findmnt", "-no", "FSTYPE,SOURCE", "-T", base); fs != "?" {
		h.dataDir += " (" + strings.Join(strings.Fields(fs), " on ") + ")"
	}
	return h
}

// output is a command's trimmed standard output, or "?".
func output(ctx context.Context, dir string, name string, args ...string) string {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if s := strings.TrimSpace(string(out)); err == nil && s != "" {
		return s
	}
	return "?"
}

// shellJoin quotes args so that the line can be pasted into a shell.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=.,:/+@%") == "" {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

// percentile is the nearest-rank p-th percentile of ds (0 when empty).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(float64(len(s))*p/100 + 0.9999999)
	return s[min(max(rank, 1), len(s))-1]
}

func fmtRate(r float64) string {
	if r <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", r)
}

func fmtMs(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case d <= 0:
		return "-"
	case ms < 10:
		return fmt.Sprintf("%.2f", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f", ms)
	}
	return fmt.Sprintf("%.0f", ms)
}

func fmtMiB(kib int64) string {
	if kib <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(kib)/1024)
}

func fmtRatio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// report is the Markdown report of a whole run.
type report struct {
	header      header
	opts        options
	configs     []config
	skipped     map[string]string // target -> why
	results     []result
	interrupted bool
}

func (r report) render() string {
	var b strings.Builder
	h := r.header
	fmt.Fprintf(&b, "# relay-bench: relay vs. stock Postfix vs. direct\n\n")
	fmt.Fprintf(&b, "- Machine: %d CPUs (%s), %.1f GiB RAM, Linux %s\n", h.cpus, h.cpuModel, float64(h.ramKiB)/(1<<20), h.kernel)
	fmt.Fprintf(&b, "- Go %s; Postfix %s; relay at git %s\n", h.goVersion, h.postfixVersion, h.relayVersion)
	fmt.Fprintf(&b, "- Date: %s\n", h.date.Format("2006-01-02 15:04:05 UTC"))
	fmt.Fprintf(&b, "- Command: `%s`\n", h.command)
	fmt.Fprintf(&b, "- Data directories under %s\n", h.dataDir)
	for _, t := range r.opts.targets {
		if why, ok := r.skipped[t]; ok {
			fmt.Fprintf(&b, "- **%s skipped**: %s\n", t, why)
		}
	}
	if r.interrupted {
		fmt.Fprintf(&b, "- **Interrupted**: only the runs that finished are shown\n")
	}
	b.WriteString("\n## How it is measured\n\n")
	b.WriteString(r.definitions())
	b.WriteString("\n## Results\n\n")
	b.WriteString(r.table())
	var notes []string
	for _, res := range r.results {
		if res.err != nil {
			notes = append(notes, fmt.Sprintf("%s %s: **error**: %v", res.target, res.cfg, res.err))
		}
		for _, n := range res.notes {
			notes = append(notes, fmt.Sprintf("%s %s: %s", res.target, res.cfg, n))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(n, "\n", " "))
		}
	}
	return b.String()
}

func (r report) definitions() string {
	conn := "one TCP connection per message (smtp-source without -d)"
	if r.opts.reuse {
		conn = "connections reused for many messages (smtp-source -d)"
	}
	lines := []string{
		fmt.Sprintf("Load: Postfix's smtp-source: `-l size` bytes of payload (headers excluded), `-s sessions` in parallel, `-r rcpts` recipients per message, `-m N` messages, %s, into smtp-sink -c, which counts messages at the end of DATA. All addresses on 127.0.0.0/8: relay %s, Postfix %s, sink %s.", conn, r.opts.relayAddr, r.opts.postfixAddr, r.opts.sinkAddr),
		fmt.Sprintf("Each (target, configuration) gets a fresh smtp-sink and a fresh target; %d warm-up messages of the same configuration go through it first (not counted); then sync, %s of quiet, and the measured run.", r.opts.warmup, r.opts.settle),
		"Targets: **relay**: `relay serve` built from this repository, a fresh data dir, one route sink.test -> sink with tls = \"none\", POP3 and admin off, `[queue] per_hop_concurrency = 20`, `--log-level warn`; it answers 250 only after the message is synced to disk (group commit). **postfix**: stock Debian Postfix as a pure relay, a private instance (own config, queue and data dirs; transport map sink.test -> smtp:[sink]; no chroot, no DNS, loopback only), started on an empty queue per configuration; it fsyncs each queue file before its 250. **direct**: smtp-source straight into smtp-sink, nothing on disk: the ceiling of the protocol on this machine.",
		"**accept/s** = N / time from the start of smtp-source until it exited (every message had its 250).",
		"**e2e/s** = N / time from the same start until smtp-sink had counted all N messages (and the probe's).",
		"**relay/direct, postfix/direct, relay/postfix** = ratios of e2e/s.",
		fmt.Sprintf("**p50 / p99 ms (n)** = accept latency. smtp-source reports none, so a probe runs beside the load: one extra SMTP session to the same target, sending a message of the same size and recipient count every %s (a new session every %d messages) while smtp-source runs, and timing each from writing the end-of-data \".\" (the body already sent) to reading the reply: the time the server took to make the message safe. Nearest-rank percentiles over n samples (with n < 100, p99 is the maximum). Probe messages are counted when waiting for the sink.", r.opts.probeInterval, probePerSession),
		"**RSS MiB** = peak resident memory. relay: VmHWM of the relay process (the configuration's whole life, warm-up included). postfix: the peak of the summed RSS of the master and all its children (smtpd, cleanup, qmgr, smtp, ...; shared pages counted once per process), sampled every 100 ms from its start. direct: smtp-sink's VmHWM.",
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	return b.String()
}

// ratioPairs are the e2e ratios reported, when both targets are measured.
var ratioPairs = [][2]string{{"relay", "direct"}, {"postfix", "direct"}, {"relay", "postfix"}}

// table renders one row per configuration, with the columns of each
// requested target and the ratios between them.
func (r report) table() string {
	head := []string{"size", "sessions", "rcpts", "N"}
	for _, t := range r.opts.targets {
		head = append(head, t+" accept/s", t+" e2e/s", t+" p50 / p99 ms (n)", t+" RSS MiB")
	}
	var pairs [][2]string
	for _, p := range ratioPairs {
		if contains(r.opts.targets, p[0]) && contains(r.opts.targets, p[1]) {
			pairs = append(pairs, p)
			head = append(head, p[0]+"/"+p[1])
		}
	}
	rows := [][]string{head}
	for _, c := range r.configs {
		byTarget := map[string]result{}
		for _, res := range r.results {
			if res.cfg == c {
				byTarget[res.target] = res
			}
		}
		if len(byTarget) == 0 {
			continue // not reached (interrupted)
		}
		row := []string{sizeLabel(c.size), fmt.Sprint(c.sessions), fmt.Sprint(c.rcpts), fmt.Sprint(c.n)}
		for _, t := range r.opts.targets {
			res, ok := byTarget[t]
			switch {
			case r.skipped[t] != "":
				row = append(row, "skipped", "-", "-", "-")
			case !ok:
				row = append(row, "-", "-", "-", "-")
			default:
				e2e := fmtRate(res.e2eRate())
				if res.err != nil {
					e2e = "error"
				}
				lat := "-"
				if n := len(res.probe.latencies); n > 0 {
					lat = fmt.Sprintf("%s / %s (%d)", fmtMs(percentile(res.probe.latencies, 50)), fmtMs(percentile(res.probe.latencies, 99)), n)
				}
				row = append(row, fmtRate(res.acceptRate()), e2e, lat, fmtMiB(res.rssKiB))
			}
		}
		for _, p := range pairs {
			row = append(row, fmtRatio(byTarget[p[0]].e2eRate(), byTarget[p[1]].e2eRate()))
		}
		rows = append(rows, row)
	}
	return markdownTable(rows)
}

// markdownTable renders rows (the first is the header) padded to columns
// of equal width in the source, right-aligned when rendered.
func markdownTable(rows [][]string) string {
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			width[i] = max(width[i], len(cell), 3)
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		for i, c := range cells {
			fmt.Fprintf(&b, "| %-*s ", width[i], c)
		}
		b.WriteString("|\n")
	}
	line(rows[0])
	sep := make([]string, len(width))
	for i, w := range width {
		sep[i] = strings.Repeat("-", w-1) + ":"
	}
	line(sep)
	for _, row := range rows[1:] {
		line(row)
	}
	return b.String()
}
