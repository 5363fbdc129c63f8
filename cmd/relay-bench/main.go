// Command relay-bench measures the relay against the other relay MTAs
// installable here, and against no relay at all, under the same load, in
// one interleaved run.
//
// For each configuration (message size x parallel sessions x recipients) it
// drives Postfix's smtp-source into each target in turn, each forwarding to
// a fresh smtp-sink:
//
//	relay:     smtp-source -> relay serve (subprocess, fresh data dir) -> smtp-sink
//	postfix:   ... -> private stock Postfix instance (pure relay) -> smtp-sink
//	exim:      ... -> Exim (exim4-daemon-light, manualroute to the sink) -> smtp-sink
//	opensmtpd: ... -> OpenSMTPD (relay host the sink) -> smtp-sink
//	haraka:    ... -> Haraka 3 (npm; outbound queue, smtp_forward's route) -> smtp-sink
//	chasquid:  ... -> chasquid (aliases to a domain whose MX is the sink) -> smtp-sink
//	direct:    smtp-source -> smtp-sink
//
// and reports accept and end-to-end rates, the accept latency seen by a
// paced probe session running alongside the load, peak memory and CPU time
// per message, as a Markdown report. Every peer is a private instance with
// its own configuration under the run's directory, durable the way it is
// by default; Exim and OpenSMTPD are extracted from their Debian packages
// (apt-get download; they conflict with Postfix) and run, like chasquid, in
// a private mount namespace. Everything listens on one /24 of 127.0.0.0/8
// (-net). The peers need root; a peer that cannot run is skipped and the
// report says why. From the repository root:
//
//	go run ./cmd/relay-bench -o bench.md                               # the whole matrix
//	go run ./cmd/relay-bench -sizes 1024 -sessions 20 -rcpts 1 -n 300  # one short configuration
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "relay-bench:", err)
		os.Exit(1)
	}
}

// options are the command-line flags, parsed.
type options struct {
	sizes, sessions, rcpts []int
	n                      int // messages per run; 0: defaultN
	targets                []string
	reuse                  bool // smtp-source -d: one connection for many messages
	warmup                 int  // messages sent before each measured run, not counted
	probeInterval          time.Duration
	settle                 time.Duration
	runTime                time.Duration // a measured run's length for a slow target (see runSize); 0: always n
	drainTimeout           time.Duration
	net                    string // the /24 everything listens on: "127.0.50"
	repo                   string
	dir                    string
	out                    string
	keep                   bool
}

var targetNames = []string{"relay", "postfix", "exim", "opensmtpd", "haraka", "chasquid", "direct"}

// hostOctets are the last octets of each server's address in the -net /24.
var hostOctets = map[string]int{
	"relay": 2, "postfix": 3, "exim": 4, "opensmtpd": 5, "chasquid": 6, "haraka": 7,
	"sink": 9, "dns": 53,
}

// addr is where the named server listens: targets on port 2525, the sink
// on 2626, the DNS server on 53.
func (o options) addr(name string) string {
	port := "2525"
	switch name {
	case "sink":
		port = "2626"
	case "dns":
		port = "53"
	}
	return fmt.Sprintf("%s.%d:%s", o.net, hostOctets[name], port)
}

// ip is the named server's address without the port.
func (o options) ip(name string) string { return fmt.Sprintf("%s.%d", o.net, hostOctets[name]) }

func parseOptions(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	sizes := fs.String("sizes", "1024,65536", "message sizes in bytes (smtp-source -l), comma-separated; a k suffix means KiB")
	sessions := fs.String("sessions", "1,20,100", "parallel sessions (smtp-source -s), comma-separated")
	rcpts := fs.String("rcpts", "1,10", "recipients per message (smtp-source -r), comma-separated")
	targets := fs.String("targets", strings.Join(targetNames, ","), "targets to measure, comma-separated")
	fs.IntVar(&o.n, "n", 0, "messages per run (0: 500 x sessions, at least 500 and at most 5000, a quarter of that above 16 KiB)")
	fs.BoolVar(&o.reuse, "reuse", false, "smtp-source -d: reuse each connection for many messages (default: one connection per message)")
	fs.IntVar(&o.warmup, "warmup", 100, "messages sent to each fresh target before the measured run, not counted")
	fs.DurationVar(&o.probeInterval, "probe-interval", 10*time.Millisecond, "pause between the starts of two probe messages")
	fs.DurationVar(&o.settle, "settle", time.Second, "quiet time (after sync) before each measured run")
	fs.DurationVar(&o.runTime, "run-time", 30*time.Second, fmt.Sprintf("a target whose warm-up rate would take longer than this for N messages gets as many as that rate allows, at least %d (0: N always)", minRun))
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Minute, "longest wait for the sink to count every message of one run")
	fs.StringVar(&o.net, "net", "127.0.50", "the /24 of 127.0.0.0/8 that every server listens on, as its first three octets (relay .2, postfix .3, exim .4, opensmtpd .5, chasquid .6, haraka .7 on port 2525; sink .9:2626; DNS .53:53)")
	fs.StringVar(&o.repo, "repo", ".", "repository root, to build ./cmd/relay from")
	fs.StringVar(&o.dir, "dir", filepath.Join(os.TempDir(), "relay-bench"), "directory for downloaded peers (kept) and each run's temporary directory")
	fs.StringVar(&o.out, "o", "", "also write the report to `FILE`")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs, configs, data) after the run")
	if err := fs.Parse(args[1:]); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if o.sizes, err = parseList(*sizes, true); err != nil {
		return o, fmt.Errorf("-sizes: %w", err)
	}
	if o.sessions, err = parseList(*sessions, false); err != nil {
		return o, fmt.Errorf("-sessions: %w", err)
	}
	if o.rcpts, err = parseList(*rcpts, false); err != nil {
		return o, fmt.Errorf("-rcpts: %w", err)
	}
	for _, t := range strings.Split(*targets, ",") {
		t = strings.TrimSpace(t)
		if !contains(targetNames, t) {
			return o, fmt.Errorf("-targets: unknown target %q (want some of %s)", t, strings.Join(targetNames, ", "))
		}
		if !contains(o.targets, t) {
			o.targets = append(o.targets, t)
		}
	}
	if o.n < 0 || o.warmup < 0 {
		return o, errors.New("-n and -warmup must not be negative")
	}
	if o.probeInterval <= 0 {
		return o, errors.New("-probe-interval must be positive")
	}
	if err := checkNet(o.net); err != nil {
		return o, fmt.Errorf("-net: %w", err)
	}
	return o, nil
}

// parseList parses "1,20,100" into positive integers; with kib, "64k"
// means 64 KiB.
func parseList(s string, kib bool) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mult := 1
		if kib && (strings.HasSuffix(f, "k") || strings.HasSuffix(f, "K")) {
			f, mult = f[:len(f)-1], 1024
		}
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, v*mult)
	}
	return out, nil
}

// checkNet accepts the first three octets of a /24 in 127.0.0.0/8.
func checkNet(n string) error {
	ip := net.ParseIP(n + ".1").To4()
	if ip == nil || strings.Count(n, ".") != 2 {
		return fmt.Errorf("%q is not three octets, like 127.0.50", n)
	}
	if ip[0] != 127 {
		return fmt.Errorf("%s.0/24: only addresses in 127.0.0.0/8 are allowed", n)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func run(args []string) error {
	opts, err := parseOptions(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	tools, err := findTools()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	for _, name := range append([]string{"sink"}, opts.targets...) {
		if a := opts.addr(name); name != "direct" && listening(a) {
			return fmt.Errorf("%s (%s) is already in use (another benchmark running?); choose another /24 with -net", a, name)
		}
	}
	if err := os.MkdirAll(opts.dir, 0o755); err != nil {
		return err
	}
	base, err := os.MkdirTemp(opts.dir, "run-")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	// The peers' daemons run as users of their own and must reach their
	// queues below.
	if err := os.Chmod(base, 0o755); err != nil {
		return err
	}
	if opts.keep {
		fmt.Fprintln(os.Stderr, "relay-bench: keeping", base)
	} else {
		defer os.RemoveAll(base)
	}

	b := &bench{opts: opts, tools: tools}
	if os.Geteuid() == 0 {
		b.cgroups = cgroupBase()
	}
	var targets []target
	skipped := map[string]string{}
	for _, name := range opts.targets {
		t, why, err := setupTarget(ctx, opts, name, base)
		if err != nil {
			return err
		}
		if why != "" {
			skipped[name] = why
			fmt.Fprintf(os.Stderr, "relay-bench: skipping %s: %s\n", name, why)
			continue
		}
		if c, ok := t.(interface{ Close() }); ok {
			defer c.Close() // also after SIGINT: run returns, this stops it
		}
		targets = append(targets, t)
	}

	hdr := collectHeader(ctx, opts, args, base, targets, b.cgroups)
	configs := opts.matrix()
	var results []result
	for _, c := range configs {
		for _, t := range targets {
			if ctx.Err() != nil {
				break
			}
			r := b.runOne(ctx, t, c)
			if ctx.Err() != nil {
				break // cut short: not a measurement
			}
			fmt.Fprintln(os.Stderr, "relay-bench:", r.summary())
			results = append(results, r)
		}
	}
	rep := report{header: hdr, opts: opts, configs: configs, skipped: skipped, results: results, interrupted: ctx.Err() != nil}
	text := rep.render()
	fmt.Print(text)
	if opts.out != "" {
		if err := os.WriteFile(opts.out, []byte(text), 0o644); err != nil {
			return fmt.Errorf("-o: %w", err)
		}
	}
	if ctx.Err() != nil {
		return errors.New("interrupted; the report above covers the runs that finished")
	}
	return nil
}

// setupTarget makes the named target ready to start, or says why it is
// skipped (a peer missing or failing to install); an error ends the run.
func setupTarget(ctx context.Context, opts options, name, base string) (target, string, error) {
	root := ""
	if os.Geteuid() != 0 {
		root = "not running as root (a private instance of a peer needs root)"
	}
	addr, sink := opts.addr(name), opts.addr("sink")
	var t target
	var err error
	switch name {
	case "relay":
		bin, err := buildRelay(ctx, opts.repo, base)
		if err != nil {
			return nil, "", err
		}
		return &relayTarget{bin: bin, base: base, addr: addr, keep: opts.keep}, "", nil
	case "direct":
		return directTarget{}, "", nil
	case "postfix":
		if why := postfixUnavailable(); why != "" {
			return nil, why, nil
		}
		t, err = setupPostfix(ctx, base, addr, sink)
	case "exim":
		if root != "" {
			return nil, root, nil
		}
		t, err = setupExim(ctx, opts.dir, base, addr, sink)
	case "opensmtpd":
		if root != "" {
			return nil, root, nil
		}
		t, err = setupOpenSMTPD(ctx, opts.dir, base, addr, sink)
	case "haraka":
		t, err = setupHaraka(ctx, opts.dir, base, addr, sink)
	case "chasquid":
		if why := chasquidUnavailable(); why != "" {
			return nil, why, nil
		}
		t, err = setupChasquid(ctx, base, addr, sink, opts.ip("dns"), slices.Max(opts.rcpts))
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		return nil, "setup failed: " + err.Error(), nil
	}
	return t, "", nil
}
