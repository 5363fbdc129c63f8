package queue

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/spool"
)

// TestBounce: an operator's bounce fails the open recipients through the
// record path (the result hook sees it), leaves the delivered one alone,
// retires the message, and owes the sender one DSN (when the queue makes
// DSNs: a message from the null path appears in the spool).
func TestBounce(t *testing.T) {
	later := func(to string, _ int) Reply {
		if strings.Contains(to, "ok@") {
			return Reply{Code: 250, Text: "250 2.0.0 OK"}
		}
		return Reply{Code: 451, Text: "451 4.3.0 try later"}
	}
	h := newHarness(t, later, policy)
	id := h.enqueue("<a@local.test>", "<ok@c.test>", "<u@c.test>", "<v@d.test>")
	for i := 0; i < 3; i++ {
		h.next()
	}
	n, err := h.q.Bounce(id)
	if err != nil || n != 2 {
		t.Fatalf("Bounce = %d, %v; want 2 recipients", n, err)
	}
	for i := 0; i < 2; i++ {
		r := h.next()
		if r.id != id || r.status != spool.StatusFailed || !strings.HasPrefix(r.reply, BounceReply+"; last reply: 451 4.3.0 try later") {
			t.Errorf("outcome %+v", r)
		}
	}
	if _, err := h.sp.Get(id); !errors.Is(err, spool.ErrNotFound) {
		t.Fatalf("bounced message still queued: %v", err)
	}
	if _, err := h.q.Bounce(id); !errors.Is(err, spool.ErrNotFound) {
		t.Fatalf("second Bounce: %v", err)
	}
	// The DSN goes to the sender's local mailbox (a@local.test).
	time.Sleep(200 * time.Millisecond)
	box, err := h.sp.Mailbox("a")
	if err != nil {
		t.Fatal(err)
	}
	if len(box) != 1 {
		t.Errorf("sender's mailbox has %d messages, want exactly 1 DSN", len(box))
	}
}

// TestReviveDialsAtOnce: after a refused connection the hop is marked
// down and further work is deferred without a dial; Revive ends that.
func TestReviveDialsAtOnce(t *testing.T) {
	h := newHarness(t, ok, policy)
	h.del.mu.Lock()
	h.del.dialErr = errors.New("connection refused")
	h.del.mu.Unlock()
	h.enqueue("<a@x.test>", "<u@c.test>")
	if r := h.next(); r.status != spool.StatusDeferred {
		t.Fatalf("first outcome %+v", r)
	}
	h.del.mu.Lock()
	h.del.dialErr = nil
	dials := h.del.dials
	h.del.mu.Unlock()
	h.enqueue("<a@x.test>", "<v@c.test>")
	if r := h.next(); r.status != spool.StatusDeferred {
		t.Fatalf("while the hop is down: %+v", r)
	}
	h.q.Revive()
	h.enqueue("<a@x.test>", "<w@c.test>")
	if r := h.next(); r.status != spool.StatusDelivered {
		t.Fatalf("after Revive: %+v", r)
	}
	h.del.mu.Lock()
	defer h.del.mu.Unlock()
	if h.del.dials != dials+1 {
		t.Errorf("%d dials after the refusal, want 1", h.del.dials-dials)
	}
}

func TestForecast(t *testing.T) {
	p := RetryPolicy{Min: time.Minute, Max: 4 * time.Minute, Lifetime: 10 * time.Minute}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Attempted once, due at +1m: then +2m, +4m, then capped at 4m, and
	// the last attempt at the end of the lifetime (+10m).
	got := p.Forecast(t0, t0.Add(time.Minute), 1, 10)
	want := []time.Duration{1, 3, 7, 10}
	if len(got) != len(want) {
		t.Fatalf("Forecast = %v", got)
	}
	for i, w := range want {
		if !got[i].Equal(t0.Add(w * time.Minute)) {
			t.Errorf("attempt %d at %v, want +%dm", i, got[i].Sub(t0), w)
		}
	}
	if got := p.Forecast(t0, t0.Add(time.Minute), 1, 2); len(got) != 2 {
		t.Errorf("Forecast with n=2: %v", got)
	}
	if got := p.Forecast(t0, time.Time{}, 1, 3); got != nil {
		t.Errorf("Forecast without a next attempt: %v", got)
	}
}
