package queue

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/relay-mta/relay/spool"
)

// TestPriorityOvertakesBacklog: 2,000 priority-0 messages are queued for
// a slow next hop, then one MT-PRIORITY=9 message for the same hop. It is
// delivered among the first few, not after the backlog.
func TestPriorityOvertakesBacklog(t *testing.T) {
	const backlog = 2000
	gate := make(chan struct{})
	var mu sync.Mutex
	var order []string // message IDs in delivery order
	h := newHarness(t, ok, policy)
	h.del.mu.Lock()
	h.del.reply = func(to string, attempt int) Reply { return Reply{Code: 250, Text: "250 2.0.0 OK"} }
	h.del.mu.Unlock()
	h.stop()
	h.startWith(policy, func(o *Options) {
		o.Deliverer = slowDeliverer{h.del, gate, 5 * time.Millisecond}
		o.OnResult = func(id string, _ int, st spool.Status, _ string) {
			if st == spool.StatusDelivered {
				mu.Lock()
				order = append(order, id)
				mu.Unlock()
			}
		}
	})
	// Enqueue the backlog concurrently (the spool commits in groups); the
	// hop is held shut meanwhile so that the backlog is really queued.
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				h.enqueueWith("<a@x.test>", "", spool.Recipient{To: "<u@c.test>"})
			}
		}()
	}
	for i := 0; i < backlog; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	time.Sleep(50 * time.Millisecond) // let the scheduler fill the lane
	urgent := h.enqueueWith("<boss@x.test>", " MT-PRIORITY=9", spool.Recipient{To: "<v@c.test>"})
	// Open the hop once a scheduling pass has taken the urgent message
	// into the (full) lane. A pass reads every due message, so this takes
	// one pass over the backlog; a hop left open meanwhile would deliver
	// that long's worth of the backlog first, which measures the pass,
	// not the lane order.
	taken := time.Now()
	for !h.q.isInflight(urgent, 0) {
		if time.Since(taken) > 10*time.Second {
			t.Fatal("the scheduler did not take the priority-9 message within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("the scheduler took the priority-9 message %v after it was queued", time.Since(taken).Round(time.Millisecond))
	close(gate)

	pos := 0
	deadline := time.Now().Add(30 * time.Second)
	for pos == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		for i, id := range order {
			if id == urgent {
				pos = i + 1
			}
		}
		mu.Unlock()
	}
	laneSize := 4 * h.conc
	fmt.Printf("priority-9 message delivered at position %d of %d (lane holds %d, %d sessions)\n", pos, backlog+1, laneSize, h.conc)
	t.Logf("priority-9 message delivered at position %d of %d", pos, backlog+1)
	if pos == 0 {
		t.Fatal("the priority-9 message was not delivered")
	}
	if pos > 2*laneSize {
		t.Fatalf("the priority-9 message was delivered at position %d, want within the first %d", pos, 2*laneSize)
	}
	// The rest of the backlog still goes, none lost to the displacement.
	deadline = time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := len(order)
		mu.Unlock()
		if n == backlog+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages delivered", n, backlog+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slowDeliverer wraps the fake deliverer: each Send waits for gate, then
// takes delay.
type slowDeliverer struct {
	d     *fakeDeliverer
	gate  chan struct{}
	delay time.Duration
}

func (s slowDeliverer) Dial(ctx context.Context, h Hop) (Session, error) {
	sess, err := s.d.Dial(ctx, h)
	if err != nil {
		return nil, err
	}
	return slowSession{sess, s}, nil
}

type slowSession struct {
	Session
	s slowDeliverer
}

func (s slowSession) Send(ctx context.Context, m *spool.Message, rcpts []string, body *spool.Body) ([]Reply, error) {
	<-s.s.gate
	time.Sleep(s.s.delay)
	return s.Session.Send(ctx, m, rcpts, body)
}

// TestLaneDisplacesLowestPriority: a full lane takes a higher-priority job
// in place of its lowest-priority latest one, refuses one of equal
// priority, and serves by priority then arrival.
func TestLaneDisplacesLowestPriority(t *testing.T) {
	q := New(Options{PerHopConcurrency: 1})
	l := &lane{q: q, ready: make(chan struct{}, q.laneCap())}
	l.workers = 1 // no worker goroutine: the test pops by hand
	mk := func(p int8) *job { return &job{msg: &spool.Message{}, prio: p} }
	jobs := []*job{mk(0), mk(3), mk(0), mk(-2)}
	for _, j := range jobs {
		if ok, out := l.push(context.Background(), j); !ok || out != nil {
			t.Fatalf("push into a lane with room: %v %v", ok, out)
		}
	}
	if ok, _ := l.push(context.Background(), mk(-2)); ok {
		t.Fatal("a full lane took a job of its lowest priority")
	}
	hi := mk(5)
	if ok, out := l.push(context.Background(), hi); !ok || out != jobs[3] {
		t.Fatalf("push of priority 5: %v, displaced %v, want the -2 job", ok, out)
	}
	if ok, out := l.push(context.Background(), mk(1)); !ok || out != jobs[2] {
		t.Fatalf("push of priority 1: %v, displaced %+v, want the later 0 job", ok, out)
	}
	var got []int8
	for j := l.pop(); j != nil; j = l.pop() {
		got = append(got, j.prio)
	}
	if fmt.Sprint(got) != "[5 3 1 0]" {
		t.Fatalf("served %v, want [5 3 1 0]", got)
	}
}
