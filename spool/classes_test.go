package spool

import (
	"context"
	"testing"
	"time"
)

// TestPriorityClasses: a message with a priority other than 0 is
// scheduled in its class's index, which DueClasses reads highest class
// first; deferral, hold, release and retry keep it there, and the
// priority survives a reopen.
func TestPriorityClasses(t *testing.T) {
	clk := newClock(t0)
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, Now: clk.Now})
	enq := func(prio int8, n int) string {
		env := env1()
		env.Priority = prio
		var rc []Recipient
		for i := range n {
			rc = append(rc, Recipient{To: "<u" + string(rune('a'+i)) + "@b.test>"})
		}
		return mustEnqueue(t, s, env, rc, []byte("body\r\n"))
	}
	low := enq(-3, 1)
	zero := enq(0, 1)
	urgent := enq(9, 2)
	five := enq(5, 1)
	checkInvariants(t, s)

	now := t0.Add(time.Second)
	hi, next, err := s.DueClasses(time.Time{}, now, 100, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(hi) != 3 || hi[0].ID != urgent || hi[1].ID != urgent || hi[2].ID != five || hi[0].Priority != 9 || hi[2].Priority != 5 || !next.IsZero() {
		t.Fatalf("classes above 0: %+v (next %v), want %s twice then %s", hi, next, urgent, five)
	}
	lo, _, err := s.DueClasses(time.Time{}, now, 100, false)
	if err != nil || len(lo) != 1 || lo[0].ID != low || lo[0].Priority != -3 {
		t.Fatalf("classes below 0: %+v %v", lo, err)
	}
	if d, err := s.Due(now, 100); err != nil || len(d) != 1 || d[0].ID != zero {
		t.Fatalf("t/ index: %+v %v, want only %s", d, err, zero)
	}

	// A deferral moves the key within its class; what is not due yet is
	// next.
	later := t0.Add(time.Minute)
	if _, err := s.Record(context.Background(), urgent, []Result{{Rcpt: 0, Status: StatusDeferred, Reply: "451 later", NextAttempt: later}}, nil); err != nil {
		t.Fatal(err)
	}
	hi, next, _ = s.DueClasses(time.Time{}, now, 100, true)
	if len(hi) != 2 || hi[0].ID != urgent || hi[0].Rcpt != 1 || !next.Equal(later) {
		t.Fatalf("after deferral: %+v next %v", hi, next)
	}
	checkInvariants(t, s)
	if _, err := s.Hold(urgent); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, s)
	if _, err := s.Release(urgent); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Retry(urgent); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, s)
	s.Close()
	s = openT(t, Options{Dir: dir, Now: clk.Now})
	m, err := s.Get(urgent)
	if err != nil || m.Priority != 9 {
		t.Fatalf("after reopen: priority %v, %v", m, err)
	}
	checkInvariants(t, s)
	// Retiring deletes the class keys.
	if _, err := s.Record(context.Background(), urgent, []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250"}, {Rcpt: 1, Status: StatusFailed, Reply: "550"}}, nil); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, s)
	hi, _, _ = s.DueClasses(time.Time{}, t0.Add(time.Hour), 100, true)
	if len(hi) != 1 || hi[0].ID != five {
		t.Fatalf("after retiring the urgent message: %+v", hi)
	}
}
