// Command relay-bench measures the relay against a stock Postfix relay and
// against no relay at all, under the same load, in one run.
//
// For each configuration (message size x parallel sessions x recipients) it
// drives Postfix's smtp-source into three targets, each forwarding to a
// fresh smtp-sink:
//
//	relay:   smtp-source -> relay serve (subprocess, fresh data dir) -> smtp-sink
//	postfix: smtp-source -> private stock Postfix instance (pure relay) -> smtp-sink
//	direct:  smtp-source -> smtp-sink
//
// and reports accept and end-to-end rates, their ratios, the accept latency
// seen by a paced probe session running alongside the load, and peak RSS, as
// a Markdown report. Everything listens on 127.0.0.0/8. The Postfix target
// needs root and the postfix package; without them it is skipped. From the
// repository root:
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
	drainTimeout           time.Duration
	relayAddr              string
	postfixAddr            string
	sinkAddr               string
	repo                   string
	dir                    string
	out                    string
	keep                   bool
}

var targetNames = []string{"relay", "postfix", "direct"}

func parseOptions(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	sizes := fs.String("sizes", "1024,65536", "message sizes in bytes (smtp-source -l), comma-separated; a k suffix means KiB")
	sessions := fs.String("sessions", "1,20,100", "parallel sessions (smtp-source -s), comma-separated")
	rcpts := fs.String("rcpts", "1,10", "recipients per message (smtp-source -r), comma-separated")
	targets := fs.String("targets", "relay,postfix,direct", "targets to measure, comma-separated")
	fs.IntVar(&o.n, "n", 0, "messages per run (0: 500 x sessions, at least 500 and at most 5000, a quarter of that above 16 KiB)")
	fs.BoolVar(&o.reuse, "reuse", false, "smtp-source -d: reuse each connection for many messages (default: one connection per message)")
	fs.IntVar(&o.warmup, "warmup", 100, "messages sent to each fresh target before the measured run, not counted")
	fs.DurationVar(&o.probeInterval, "probe-interval", 10*time.Millisecond, "pause between the starts of two probe messages")
	fs.DurationVar(&o.settle, "settle", time.Second, "quiet time (after sync) before each measured run")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Minute, "longest wait for the sink to count every message of one run")
	fs.StringVar(&o.relayAddr, "relay-addr", "127.0.0.2:2525", "where the relay listens (127.0.0.0/8)")
	fs.StringVar(&o.postfixAddr, "postfix-addr", "127.0.0.3:2525", "where Postfix listens (127.0.0.0/8)")
	fs.StringVar(&o.sinkAddr, "sink-addr", "127.0.0.9:2626", "where smtp-sink listens (127.0.0.0/8)")
	fs.StringVar(&o.repo, "repo", ".", "repository root, to build ./cmd/relay from")
	fs.StringVar(&o.dir, "dir", os.TempDir(), "directory for the run's temporary directory (binaries, data dirs, Postfix instance)")
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
	for _, a := range []struct{ flag, addr string }{
		{"-relay-addr", o.relayAddr}, {"-postfix-addr", o.postfixAddr}, {"-sink-addr", o.sinkAddr},
	} {
		if err := checkLoopback(a.addr); err != nil {
			return o, fmt.Errorf("%s: %w", a.flag, err)
		}
	}
	if o.relayAddr == o.sinkAddr || o.postfixAddr == o.sinkAddr || o.relayAddr == o.postfixAddr {
		return o, errors.New("-relay-addr, -postfix-addr and -sink-addr must differ")
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

// checkLoopback accepts only host:port with an IPv4 host in 127.0.0.0/8.
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() == nil || ip.To4()[0] != 127 {
		return fmt.Errorf("%s: only addresses in 127.0.0.0/8 are allowed", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("%s: bad port", addr)
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

	for _, a := range []string{opts.relayAddr, opts.postfixAddr, opts.sinkAddr} {
		if listening(a) {
			return fmt.Errorf("%s is already in use (another benchmark running?); choose other addresses with -relay-addr, -postfix-addr, -sink-addr", a)
		}
	}
	base, err := os.MkdirTemp(opts.dir, "relay-bench-")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	// Postfix daemons run as user postfix and must reach their queue below.
	if err := os.Chmod(base, 0o755); err != nil {
		return err
	}
	if opts.keep {
		fmt.Fprintln(os.Stderr, "relay-bench: keeping", base)
	} else {
		defer os.RemoveAll(base)
	}

	b := &bench{opts: opts, tools: tools}
	var targets []target
	skipped := map[string]string{}
	for _, name := range opts.targets {
		switch name {
		case "relay":
			bin, err := buildRelay(ctx, opts.repo, base)
			if err != nil {
				return err
			}
			targets = append(targets, &relayTarget{bin: bin, base: base, addr: opts.relayAddr, keep: opts.keep})
		case "postfix":
			if why := postfixUnavailable(); why != "" {
				skipped[name] = why
				fmt.Fprintln(os.Stderr, "relay-bench: skipping postfix:", why)
				continue
			}
			pf, err := setupPostfix(ctx, base, opts.postfixAddr, opts.sinkAddr)
			if err != nil {
				return err
			}
			defer pf.Close() // also after SIGINT: run returns, this stops the instance
			targets = append(targets, pf)
		case "direct":
			targets = append(targets, directTarget{})
		}
	}

	hdr := collectHeader(ctx, opts, args, base)
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
