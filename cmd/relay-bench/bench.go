package main

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
)

type bench struct {
	opts    options
	tools   tools
	cgroups string // cgroupBase(): "" to follow process trees instead
	runs    int    // runs started, to name their cgroups
}

// result is one measured run: one target under one configuration.
type result struct {
	target string
	cfg    config
	n      int           // messages in the measured run: cfg.n, or fewer for a slow target (-run-time)
	accept time.Duration // until smtp-source exited; 0: not measured
	e2e    time.Duration // until the sink counted every message; 0: not measured
	probe  probeResult
	mem    memory        // peaks over the instance's life; 0: not measured
	cpu    time.Duration // CPU time of the target's processes per message; 0: not measured
	notes  []string
	err    error
}

func (r result) acceptRate() float64 { return rate(r.n, r.accept) }
func (r result) e2eRate() float64    { return rate(r.n, r.e2e) }

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// summary is a progress line for stderr.
func (r result) summary() string {
	s := fmt.Sprintf("%-9s %s (sent %d): accept %s, e2e %s, latency p50 %s p99 %s ms (%d samples), peak RSS %s anon %s MiB, CPU %s ms/msg",
		r.target, r.cfg, r.n, fmtRate(r.acceptRate()), fmtRate(r.e2eRate()),
		fmtMs(percentile(r.probe.latencies, 50)), fmtMs(percentile(r.probe.latencies, 99)),
		len(r.probe.latencies), fmtMiB(r.mem.rss), fmtMiB(r.mem.anon), fmtCPU(r.cpu))
	if r.err != nil {
		s += "; ERROR: " + r.err.Error()
	}
	return s
}

// runOne measures target t under configuration c, from fresh processes:
// a new smtp-sink, a new target instance, a warm-up, a pause, then the
// measured run with the probe alongside.
func (b *bench) runOne(ctx context.Context, t target, c config) result {
	res := result{target: t.Name(), cfg: c}
	res.err = b.measure(ctx, t, c, &res)
	return res
}

func (b *bench) measure(ctx context.Context, t target, c config, res *result) error {
	b.runs++
	sinkGroup, err := newGroup(b.cgroups, fmt.Sprintf("%d-sink", b.runs))
	if err != nil {
		return err
	}
	defer closeGroup(sinkGroup, res)
	sk, err := startSink(ctx, b.tools.sink, b.opts.addr("sink"), sinkGroup)
	if err != nil {
		return err
	}
	defer sk.stop()
	g, err := newGroup(b.cgroups, fmt.Sprintf("%d-%s", b.runs, t.Name()))
	if err != nil {
		return err
	}
	defer closeGroup(g, res)
	inst, err := t.Start(ctx, sk, g)
	if err != nil {
		return err
	}
	defer func() {
		if err := inst.Stop(); err != nil {
			res.notes = append(res.notes, err.Error())
		}
	}()
	if _, ok := t.(directTarget); ok {
		g = sinkGroup // the ceiling's costs are the sink's
	}
	mem := sampleMemory(g, 100*time.Millisecond)
	defer func() {
		var err error
		if res.mem, err = mem.stop(); err != nil {
			res.notes = append(res.notes, err.Error())
		}
	}()
	addr := inst.Addr()
	deadline := func(from time.Time) time.Time { return from.Add(b.opts.drainTimeout) }
	// copies is how many messages the sink counts for each one sent.
	copies := 1
	if _, ok := t.(perRecipient); ok {
		copies = c.rcpts
	}

	res.n = c.n
	if w := b.opts.warmup; w > 0 {
		start := time.Now()
		if _, err := runSource(ctx, b.tools.source, addr, c, w, b.opts.reuse); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		if err := sk.waitCount(ctx, w*copies, deadline(start), inst.Died()); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		res.n = runSize(c.n, w, time.Since(start), b.opts.runTime)
	}
	syscall.Sync()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.opts.settle):
	}

	base := int(sk.count.Load())
	probeCtx, stopProbe := context.WithCancel(ctx)
	probed := make(chan probeResult, 1)
	p := probe{addr: addr, size: c.size, rcpts: c.rcpts, interval: b.opts.probeInterval, limit: probeLimit(res.n)}
	cpu0, cpuErr := g.cpu()
	go func() { probed <- p.run(probeCtx) }()

	start := time.Now()
	said, srcErr := runSource(ctx, b.tools.source, addr, c, res.n, b.opts.reuse)
	res.accept = time.Since(start)
	stopProbe()
	res.probe = <-probed
	if srcErr != nil {
		res.accept = 0
		return srcErr
	}
	if said != "" {
		res.notes = append(res.notes, "smtp-source: "+said)
	}
	if pr := res.probe; pr.failures > 0 {
		res.notes = append(res.notes, fmt.Sprintf("probe: %d messages without 250; first: %v", pr.failures, pr.firstErr))
	}

	msgs := res.n + len(res.probe.latencies)
	want := base + msgs*copies
	if err := sk.waitCount(ctx, want, deadline(start), inst.Died()); err != nil {
		return fmt.Errorf("end to end: %w", err)
	}
	res.e2e = time.Since(start)
	cpu1, err := g.cpu()
	if cpuErr == nil && err == nil {
		res.cpu = (cpu1 - cpu0) / time.Duration(msgs)
	} else {
		res.notes = append(res.notes, fmt.Sprintf("CPU time: %v", errors.Join(cpuErr, err)))
	}
	if extra := int(sk.count.Load()) - want; extra > 0 {
		res.notes = append(res.notes, fmt.Sprintf("the sink counted %d messages more than were sent", extra))
	}
	return nil
}

// runSize is the number of messages for a measured run: n, or as many as
// the warm-up's rate (w messages end to end in took) gets through in
// runTime, if fewer, but at least minRun. Rates are per second, so a slow
// peer measured on fewer messages stays comparable, and the matrix does
// not take hours for it.
func runSize(n, w int, took, runTime time.Duration) int {
	if runTime <= 0 || took <= 0 {
		return n
	}
	fit := int(float64(w) / took.Seconds() * runTime.Seconds())
	return min(n, max(fit, minRun))
}

// minRun is the fewest messages a measured run sends (unless -n is less).
const minRun = 200

// closeGroup ends whatever is left of a group after its run.
func closeGroup(g *group, res *result) {
	if err := g.close(30 * time.Second); err != nil {
		res.notes = append(res.notes, err.Error())
	}
}
