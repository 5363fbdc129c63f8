package main

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

type bench struct {
	opts  options
	tools tools
}

// result is one measured run: one target under one configuration.
type result struct {
	target string
	cfg    config
	accept time.Duration // until smtp-source exited; 0: not measured
	e2e    time.Duration // until the sink counted every message; 0: not measured
	probe  probeResult
	rssKiB int64 // 0: not measured
	notes  []string
	err    error
}

func (r result) acceptRate() float64 { return rate(r.cfg.n, r.accept) }
func (r result) e2eRate() float64    { return rate(r.cfg.n, r.e2e) }

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// summary is a progress line for stderr.
func (r result) summary() string {
	s := fmt.Sprintf("%-7s %s: accept %s, e2e %s, latency p50 %s p99 %s ms (%d samples), peak RSS %s MiB",
		r.target, r.cfg, fmtRate(r.acceptRate()), fmtRate(r.e2eRate()),
		fmtMs(percentile(r.probe.latencies, 50)), fmtMs(percentile(r.probe.latencies, 99)),
		len(r.probe.latencies), fmtMiB(r.rssKiB))
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
	sk, err := startSink(ctx, b.tools.sink, b.opts.sinkAddr)
	if err != nil {
		return err
	}
	defer sk.stop()
	inst, err := t.Start(ctx, sk)
	if err != nil {
		return err
	}
	defer func() {
		if err := inst.Stop(); err != nil {
			res.notes = append(res.notes, err.Error())
		}
	}()
	addr := inst.Addr()
	deadline := func(from time.Time) time.Time { return from.Add(b.opts.drainTimeout) }

	if w := b.opts.warmup; w > 0 {
		start := time.Now()
		if _, err := runSource(ctx, b.tools.source, addr, c, w, b.opts.reuse); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		if err := sk.waitCount(ctx, w, deadline(start), inst.Died()); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
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
	p := probe{addr: addr, size: c.size, rcpts: c.rcpts, interval: b.opts.probeInterval}
	go func() { probed <- p.run(probeCtx) }()

	start := time.Now()
	said, srcErr := runSource(ctx, b.tools.source, addr, c, c.n, b.opts.reuse)
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

	want := base + c.n + len(res.probe.latencies)
	if err := sk.waitCount(ctx, want, deadline(start), inst.Died()); err != nil {
		return fmt.Errorf("end to end: %w", err)
	}
	res.e2e = time.Since(start)
	if extra := int(sk.count.Load()) - want; extra > 0 {
		res.notes = append(res.notes, fmt.Sprintf("the sink counted %d messages more than were sent", extra))
	}
	if res.rssKiB, err = inst.PeakRSS(); err != nil {
		res.notes = append(res.notes, "peak RSS: "+err.Error())
	}
	return nil
}
