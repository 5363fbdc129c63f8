package queue

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/relay-mta/relay/spool"
)

// partitioned answers 421 until heal is set, then 250.
func partitioned(heal *atomic.Bool) func(string, int) Reply {
	return func(string, int) Reply {
		if heal.Load() {
			return Reply{Code: 250, Text: "250 2.0.0 OK"}
		}
		return Reply{Code: 421, Text: "421 4.4.2 next hop unreachable"}
	}
}

// stepUntil advances the fake clock step at a time until cond holds, and
// returns how far the clock moved.
func (h *harness) stepUntil(what string, step, limit time.Duration, cond func() bool) time.Duration {
	h.t.Helper()
	var moved time.Duration
	for !cond() {
		if moved >= limit {
			h.t.Fatalf("%s: not within %v of fake time", what, limit)
		}
		h.advance(step)
		moved += step
		deadline := time.Now().Add(100 * time.Millisecond)
		for !cond() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return moved
}

// TestDeliverByReturn: BY=5;R toward a partitioned next hop fails at the
// deadline, before the 1-minute backoff would retry, with exactly one
// failure DSN carrying 5.4.7.
func TestDeliverByReturn(t *testing.T) {
	var heal atomic.Bool
	h := newHarness(t, partitioned(&heal), policy)
	id := h.enqueueWith("<sender@local.test>", " BY=5;R", spool.Recipient{To: "<u@c.test>"})
	if r := h.next(); r.id != id || r.status != spool.StatusDeferred {
		t.Fatalf("first outcome %+v, want deferred", r)
	}
	var failed atomic.Bool
	go func() {
		for r := range h.results {
			if r.id == id && r.status == spool.StatusFailed {
				failed.Store(true)
			}
		}
	}()
	moved := h.stepUntil("failure", time.Second, time.Minute, failed.Load)
	if moved != 5*time.Second {
		t.Errorf("failed %v after arrival, want at the 5s deadline", moved)
	}
	h.stepUntil("the DSN", time.Second, 3*time.Second, func() bool { return len(h.dsns("sender")) > 0 })
	heal.Store(true)
	h.advance(2 * time.Minute) // nothing may come of the message any more
	time.Sleep(200 * time.Millisecond)
	dsns := h.dsns("sender")
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs, want exactly 1", len(dsns))
	}
	d := parseDSN(t, dsns[0])
	if got := d.perRcpt[0].Get("Action"); got != "failed" {
		t.Errorf("Action = %q, want failed", got)
	}
	if got := d.perRcpt[0].Get("Status"); got != "5.4.7" {
		t.Errorf("Status = %q, want 5.4.7", got)
	}
	if n := len(h.del.log()); n != 1 {
		t.Errorf("%d attempts, want 1 (the deadline fails it without another try)", n)
	}
}

// TestDeliverByNotify: BY=5;N toward a partitioned next hop gives one
// delay DSN at the deadline (status 4.4.7); after the heal the message is
// delivered and nothing more is sent to the sender.
func TestDeliverByNotify(t *testing.T) {
	var heal atomic.Bool
	h := newHarness(t, partitioned(&heal), policy)
	id := h.enqueueWith("<sender@local.test>", " BY=5;N", spool.Recipient{To: "<u@c.test>"})
	var delivered atomic.Bool
	go func() {
		for r := range h.results {
			if r.id == id && r.status == spool.StatusDelivered {
				delivered.Store(true)
			}
		}
	}()
	moved := h.stepUntil("the delay DSN", time.Second, time.Minute, func() bool { return len(h.dsns("sender")) > 0 })
	if moved != 5*time.Second {
		t.Errorf("delay DSN %v after arrival, want at the 5s deadline", moved)
	}
	heal.Store(true)
	h.stepUntil("delivery after the heal", 10*time.Second, 3*time.Minute, delivered.Load)
	time.Sleep(200 * time.Millisecond)
	dsns := h.dsns("sender")
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs, want exactly 1", len(dsns))
	}
	d := parseDSN(t, dsns[0])
	if got := d.perRcpt[0].Get("Action"); got != "delayed" {
		t.Errorf("Action = %q, want delayed", got)
	}
	if got := d.perRcpt[0].Get("Status"); got != "4.4.7" {
		t.Errorf("Status = %q, want 4.4.7", got)
	}
}
