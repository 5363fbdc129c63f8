package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/relay-mta/relay/relay/admin/api"
	"github.com/relay-mta/relay/relay/smtpd"
)

// Draining a node (`relay serve --drain`, `relay queue drain`; design
// §18): the relay stops accepting mail (its SMTP and submission
// listeners close; sessions in progress may finish, idle ones are told
// 421 4.3.2), then either transfers its queue to another relay or
// delivers it as usual, and Run returns once the queue is empty.

// drainState is whether and where the relay drains.
type drainState struct {
	mu  sync.Mutex
	on  bool
	to  string        // "" : deliver everything here
	req chan struct{} // closed when the drain starts
}

// drainRetry is the pause between two transfer rounds when some
// messages could not be transferred (the other relay is down or
// refused them).
const drainRetry = 2 * time.Second

// Drain starts draining the relay (before or while it runs): no new
// mail, and the queue transferred to to ("host:port") or, with to "",
// delivered here; Run returns when the queue is empty. Draining again
// only reports the state, or changes where the queue goes.
func (r *Relay) Drain(to string) (*api.Drain, error) {
	if to != "" {
		if _, _, err := net.SplitHostPort(to); err != nil {
			return nil, fmt.Errorf("relay: drain to %q: want host:port: %w", to, err)
		}
	}
	d := &r.drain
	d.mu.Lock()
	already := d.on
	if !d.on {
		d.on = true
		close(d.req)
	}
	if to != "" || !already {
		d.to = to
	}
	to = d.to
	d.mu.Unlock()
	st, err := r.spool.Stats(nil)
	if err != nil {
		return nil, fmt.Errorf("relay: drain: %w", err)
	}
	out := &api.Drain{To: to, Queued: st.Messages, Held: st.Held}
	switch {
	case to != "":
		out.Result = fmt.Sprintf("draining: no new mail; %d queued messages go to %s, then the daemon exits", st.Messages, to)
	case st.Held > 0:
		out.Result = fmt.Sprintf("draining: no new mail; %d queued messages are delivered, then the daemon exits (%d held ones first need release, or a drain --to)", st.Messages, st.Held)
	default:
		out.Result = fmt.Sprintf("draining: no new mail; %d queued messages are delivered, then the daemon exits", st.Messages)
	}
	if !already {
		r.log.Info("relay: draining", "to", to, "queued", st.Messages)
	}
	return out, nil
}

// drainTarget is where the queue goes ("" : delivered here).
func (r *Relay) drainTarget() string {
	r.drain.mu.Lock()
	defer r.drain.mu.Unlock()
	return r.drain.to
}

// runDrain waits for Drain, stops accepting mail, and empties the queue;
// it closes done when the queue is empty. It returns early when ctx ends.
func (r *Relay) runDrain(ctx context.Context, done chan<- struct{}) {
	select {
	case <-r.drain.req:
	case <-ctx.Done():
		return
	}
	sctx, cancel := context.WithTimeout(ctx, ShutdownGrace)
	if err := r.smtp.Shutdown(sctx); err != nil && !errors.Is(err, smtpd.ErrServerClosed) {
		r.log.Warn("relay: drain: sessions cut off", "err", err)
	}
	r.shutdownSubmission(sctx)
	cancel()
	// A listener whose Serve had not begun when the servers shut down is
	// not closed by them.
	for _, l := range r.listeners {
		l.Close()
	}
	for _, l := range r.submitListeners {
		l.Close()
	}
	r.log.Info("relay: drain: no longer accepting mail")
	if r.drainTarget() == "" {
		// Delivering here: every message is attempted now, not when its
		// backoff says; afterwards the usual retries apply.
		if _, err := r.spool.RetryAll(); err != nil {
			r.log.Error("relay: drain: retry", "err", err)
		}
		r.queue.Revive()
		r.queue.Notify()
	}
	start := time.Now()
	transferred := 0
	for {
		if to := r.drainTarget(); to != "" {
			changes, err := r.Transfer(ctx, to, nil, true)
			if err != nil {
				r.log.Error("relay: drain: transfer", "to", to, "err", err)
			}
			for _, c := range changes {
				if c.Recipients > 0 {
					transferred++
				}
			}
		}
		st, err := r.spool.Stats(nil)
		switch {
		case err != nil:
			r.log.Error("relay: drain", "err", err)
		case st.Messages == 0:
			r.log.Info("relay: drain: queue empty", "transferred", transferred, "elapsed", time.Since(start).Round(time.Millisecond))
			close(done)
			return
		}
		if r.drainTarget() == "" {
			r.queue.Notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(drainPause(r.drainTarget(), err == nil && st.Messages > 0)):
		}
	}
}

// drainPause is how long to wait before looking at the queue again: a
// transfer round that left messages behind waits drainRetry; delivering
// here, the queue is polled often.
func drainPause(to string, left bool) time.Duration {
	if to != "" && left {
		return drainRetry
	}
	return 200 * time.Millisecond
}
