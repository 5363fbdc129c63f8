package queue

import (
	"errors"
	"fmt"
	"time"

	"github.com/relay-mta/relay/spool"
)

// Operator actions that belong to the queue rather than the spool: a
// bounce goes through the queue's own record path (DSN, log line, result
// hooks) exactly like a 5xx from a next hop, and only the queue knows
// which next hops it considers down.

// BounceReply is recorded as the reply of each recipient the operator
// bounces; the DSN carries it as the diagnostic.
const BounceReply = "550 5.0.0 Delivery cancelled by the administrator"

// Bounce fails every pending or deferred recipient of message id now.
// The failures are recorded as delivery outcomes are, so the message
// retires and its sender gets the DSN that NOTIFY asks for (by default
// one, for all of them). It returns how many recipients it failed.
//
// A delivery already in progress for the message is not stopped: if the
// next hop accepts it meanwhile, that outcome is lost (the message is
// gone) and the recipient may both receive the message and be reported
// as failed.
func (q *Queue) Bounce(id string) (int, error) {
	m, err := q.o.Spool.Get(id)
	if err != nil {
		return 0, fmt.Errorf("queue: bounce: %w", err)
	}
	var results []spool.Result
	for n, r := range m.Recipients {
		if r.Status == spool.StatusDelivered || r.Status == spool.StatusFailed {
			continue
		}
		reply := BounceReply
		if r.LastReply != "" {
			reply += "; last reply: " + r.LastReply
		}
		results = append(results, spool.Result{Rcpt: n, Status: spool.StatusFailed, Reply: reply})
	}
	if len(results) == 0 {
		return 0, nil
	}
	text := fmt.Sprintf("by the operator: %d recipients fail now", len(results))
	if len(results) == 1 {
		text = "by the operator: 1 recipient fails now"
	}
	ev := spool.Event{Kind: spool.EventBounced, Rcpt: -1, Text: text}
	if err := q.o.Spool.AddEvent(m.ID, ev); err != nil {
		return 0, fmt.Errorf("queue: bounce: %w", err)
	}
	q.record(m, results, nil)
	// record logs a failure to store the outcomes rather than returning
	// it; whether the message retired tells.
	switch _, err := q.o.Spool.Get(m.ID); {
	case errors.Is(err, spool.ErrNotFound):
		return len(results), nil
	case err != nil:
		return 0, fmt.Errorf("queue: bounce %s: %w", m.ID, err)
	default:
		return 0, fmt.Errorf("queue: bounce %s: the failures were not recorded (see the log)", m.ID)
	}
}

// Revive forgets which next hops recently refused connections, so that
// work an operator made due now (retry, release) is attempted at once
// instead of being deferred without a dial while the hop is marked down.
func (q *Queue) Revive() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, l := range q.lanes {
		l.mu.Lock()
		l.deadUntil = time.Time{}
		l.mu.Unlock()
	}
}

// Forecast returns up to n attempt times of a recipient that has had
// attempts attempts and is due next at next: next itself, then each
// retry the policy would schedule if every attempt were deferred, without
// jitter (so ±10% in reality), ending with the one last attempt at the
// end of the lifetime counted from received.
func (p RetryPolicy) Forecast(received, next time.Time, attempts, n int) []time.Time {
	if n <= 0 || next.IsZero() {
		return nil
	}
	out := []time.Time{next}
	var expiry time.Time
	if p.Lifetime > 0 {
		expiry = received.Add(p.Lifetime)
	}
	t := next
	for a := attempts + 1; len(out) < n; a++ {
		d := p.Delay(a)
		if d <= 0 || (!expiry.IsZero() && !t.Before(expiry)) {
			break
		}
		t = t.Add(d)
		if !expiry.IsZero() && t.After(expiry) {
			t = expiry
		}
		out = append(out, t)
	}
	return out
}

// Claim takes message id out of the queue's hands until the returned
// function is called: no delivery of it is dispatched from now on, and
// Busy tells when those already dispatched are over. Together they let
// a caller (relay queue transfer) take the message elsewhere without ever
// racing a delivery of it: the check and the dispatch are under one lock.
func (q *Queue) Claim(id string) (release func()) {
	q.mu.Lock()
	q.claimed[id]++
	q.mu.Unlock()
	return func() {
		q.mu.Lock()
		if q.claimed[id]--; q.claimed[id] <= 0 {
			delete(q.claimed, id)
		}
		q.mu.Unlock()
	}
}

// Busy reports whether a delivery of message id is queued in a lane or in
// progress.
func (q *Queue) Busy(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for ref := range q.inflight {
		if ref.id == id {
			return true
		}
	}
	return false
}
