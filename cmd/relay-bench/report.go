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
	peers          []string // "Exim 4.96-15+deb12u11", ...
	cgroups        bool     // CPU and memory per cgroup, not per process tree
	date           time.Time
	command        string
	dataDir        string
}

func collectHeader(ctx context.Context, o options, args []string, base string, targets []target, cgroups string) header {
	h := header{
		cpus:     runtime.NumCPU(),
		cpuModel: "unknown",
		date:     time.Now().UTC(),
		// The program's own path is a temporary file under go run: name
		// the command instead.
		command: shellJoin(append([]string{"relay-bench"}, args[1:]...)),
		dataDir: base,
		cgroups: cgroups != "",
	}
	for _, t := range targets {
		if v, ok := t.(versioned); ok {
			h.peers = append(h.peers, v.Version())
		}
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
		h.ramKiB, _, _ = statusKiB(b, "MemTotal")
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

// fmtCPU writes a CPU time per message in milliseconds.
func fmtCPU(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond))
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
	fmt.Fprintf(&b, "# relay-bench: the relay against other relay MTAs and direct\n\n")
	fmt.Fprintf(&b, "- Machine: %d CPUs (%s), %.1f GiB RAM, Linux %s\n", h.cpus, h.cpuModel, float64(h.ramKiB)/(1<<20), h.kernel)
	fmt.Fprintf(&b, "- Go %s; relay at git %s; Postfix %s\n", h.goVersion, h.relayVersion, strings.Join(append([]string{h.postfixVersion}, h.peers...), "; "))
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
	procs := "the cgroup each target's first process is born into, so every process it ever started (exited ones included)"
	if !r.header.cgroups {
		procs = "the process trees of each target's main processes (no cgroups: an exited process counts once a process of the tree reaped it)"
	}
	var addrs []string
	for _, t := range append([]string{"sink"}, r.opts.targets...) {
		if t != "direct" {
			addrs = append(addrs, t+" "+r.opts.addr(t))
		}
	}
	lines := []string{
		fmt.Sprintf("Load: Postfix's smtp-source: `-l size` bytes of payload (headers excluded), `-s sessions` in parallel, `-r rcpts` recipients per message, `-m N` messages, %s, into smtp-sink -c, which counts messages at the end of DATA. Addresses: %s.", conn, strings.Join(addrs, ", ")),
		fmt.Sprintf("Each (configuration, target), the targets in turn for each configuration, gets a fresh smtp-sink and a fresh target on an empty queue; %d warm-up messages of the same configuration go through it first (not counted); then sync, %s of quiet, and the measured run of N messages. N is the configuration's, or, for a target whose warm-up rate would need more than %s for them, as many as that rate sends in %s (at least %d): rates are per second, and slow peers do not make the matrix take hours.", r.opts.warmup, r.opts.settle, r.opts.runTime, r.opts.runTime, minRun),
		"Targets are private instances with configurations of their own (in docs/benchmarks.md), each a pure relay of sink.test to the sink, durable as it is by default. **direct** is smtp-source straight into smtp-sink, nothing on disk: the ceiling of the protocol on this machine.",
		"**accept/s** = N / time from the start of smtp-source until it exited (every message had its reply).",
		"**e2e/s** = N / time from the same start until smtp-sink had counted all N messages (and the probe's; chasquid delivers each recipient in a transaction of its own, so for it the sink counts rcpts messages per message).",
		"**÷ direct** = e2e/s over direct's; **relay ÷** = the relay's e2e/s over this target's.",
		fmt.Sprintf("**p50 / p99 ms (n)** = accept latency. smtp-source reports none, so a probe runs beside the load: one extra SMTP session to the same target, sending a message of the same size and recipient count every %s (a new session every %d messages) while smtp-source runs, and timing each from writing the end-of-data \".\" (the body already sent) to reading the reply: the time the server took to make the message safe. Nearest-rank percentiles over n samples (with n < 100, p99 is the maximum).", r.opts.probeInterval, probePerSession),
		"**RSS MiB, anon MiB** = the peaks of VmRSS and of RssAnon summed over the target's processes, sampled every 100 ms over the target's whole life (warm-up included). RSS counts pages shared between processes (program text, libraries) once per process, so it overstates multi-process servers; RssAnon is their private memory, heaps and stacks. direct: smtp-sink's.",
		fmt.Sprintf("**CPU ms/msg** = user+system CPU time of the target's processes from the start of the measured run until the sink had every message, over the messages sent (N and the probe's); the processes are %s. The least noisy figure on a shared machine: it does not count time spent waiting for a CPU. direct: smtp-sink's.", procs),
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	return b.String()
}

// table renders one row per configuration and target.
func (r report) table() string {
	rows := [][]string{{"size", "sessions", "rcpts", "N", "target", "accept/s", "e2e/s", "÷ direct", "relay ÷", "p50 / p99 ms (n)", "RSS MiB", "anon MiB", "CPU ms/msg"}}
	for _, c := range r.configs {
		byTarget := map[string]result{}
		for _, res := range r.results {
			if res.cfg == c {
				byTarget[res.target] = res
			}
		}
		for _, t := range r.opts.targets {
			res, ok := byTarget[t]
			if !ok {
				continue // skipped, or not reached (interrupted)
			}
			e2e := fmtRate(res.e2eRate())
			if res.err != nil {
				e2e = "error"
			}
			lat := "-"
			if n := len(res.probe.latencies); n > 0 {
				lat = fmt.Sprintf("%s / %s (%d)", fmtMs(percentile(res.probe.latencies, 50)), fmtMs(percentile(res.probe.latencies, 99)), n)
			}
			vsDirect, relayVs := "-", "-"
			if t != "direct" {
				vsDirect = fmtRatio(res.e2eRate(), byTarget["direct"].e2eRate())
			}
			if t != "relay" {
				relayVs = fmtRatio(byTarget["relay"].e2eRate(), res.e2eRate())
			}
			rows = append(rows, []string{sizeLabel(c.size), fmt.Sprint(c.sessions), fmt.Sprint(c.rcpts), fmt.Sprint(res.n), t,
				fmtRate(res.acceptRate()), e2e, vsDirect, relayVs, lat, fmtMiB(res.mem.rss), fmtMiB(res.mem.anon), fmtCPU(res.cpu)})
		}
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
