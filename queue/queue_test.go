package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relay-mta/relay/spool"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// hopRouter sends "<x@local.test>" to the mailbox x, every other
// recipient to the lane named by its domain.
type hopRouter struct{}

func (hopRouter) Route(to string) (Hop, string, error) {
	addr := strings.Trim(to, "<>")
	local, domain, _ := strings.Cut(addr, "@")
	switch domain {
	case "local.test":
		return Hop{Key: "local", Local: true, Mailbox: local}, to, nil
	case "nxdomain.test":
		return Hop{}, "", &PermanentError{Code: 550, Err: errors.New("5.1.2 no such domain")}
	}
	return Hop{Key: "smtp:" + domain, Addrs: []string{domain + ":25"}}, to, nil
}

type sendRec struct {
	hop   string
	rcpts []string
	at    time.Time
}

// fakeDeliverer answers each recipient with reply(to, attempt).
type fakeDeliverer struct {
	clock   *fakeClock
	reply   func(to string, attempt int) Reply
	dialErr error

	mu       sync.Mutex
	dials    int
	sends    []sendRec
	attempts map[string]int
}

func (d *fakeDeliverer) Dial(_ context.Context, h Hop) (Session, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dials++
	if d.dialErr != nil {
		return nil, d.dialErr
	}
	return &fakeSession{d: d, hop: h}, nil
}

func (d *fakeDeliverer) log() []sendRec {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]sendRec(nil), d.sends...)
}

type fakeSession struct {
	d   *fakeDeliverer
	hop Hop
}

func (s *fakeSession) Send(_ context.Context, m *spool.Message, rcpts []string, body *spool.Body) ([]Reply, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	if s.d.attempts == nil {
		s.d.attempts = map[string]int{}
	}
	s.d.sends = append(s.d.sends, sendRec{hop: s.hop.Key, rcpts: rcpts, at: s.d.clock.Now()})
	out := make([]Reply, len(rcpts))
	for i, r := range rcpts {
		s.d.attempts[r]++
		out[i] = s.d.reply(r, s.d.attempts[r])
	}
	return out, nil
}
func (s *fakeSession) Remote() string { return s.hop.Addrs[0] }
func (s *fakeSession) Close() error   { return nil }

type result struct {
	id     string
	rcpt   int
	status spool.Status
	reply  string
}

// harness runs a queue over a real spool with a fake clock.
type harness struct {
	t       *testing.T
	clock   *fakeClock
	sp      *spool.Spool
	del     *fakeDeliverer
	q       *Queue
	results chan result
	stop    func()
	conc    int
}

func newHarness(t *testing.T, reply func(string, int) Reply, policy RetryPolicy) *harness {
	t.Helper()
	h := newIdleHarness(t, reply)
	h.start(policy)
	return h
}

// newIdleHarness is newHarness without the queue running yet.
func newIdleHarness(t *testing.T, reply func(string, int) Reply) *harness {
	t.Helper()
	clock := &fakeClock{t: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)}
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), Now: clock.Now, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	h := &harness{t: t, clock: clock, sp: sp, results: make(chan result, 1000),
		del: &fakeDeliverer{clock: clock, reply: reply}, conc: 2}
	return h
}

func (h *harness) start(policy RetryPolicy) { h.startWith(policy, nil) }

// startWith starts the queue, letting the test adjust its Options.
func (h *harness) startWith(policy RetryPolicy, adjust func(*Options)) {
	o := Options{
		Spool: h.sp, Router: hopRouter{}, Deliverer: h.del, Retry: policy,
		PerHopConcurrency: h.conc, Now: h.clock.Now, Rand: func() float64 { return 0.5 },
		RestartJitter: -1,
		OnResult: func(id string, n int, st spool.Status, reply string) {
			h.results <- result{id, n, st, reply}
		},
	}
	if adjust != nil {
		adjust(&o)
	}
	h.q = New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.q.Run(ctx); close(done) }()
	h.stop = func() { cancel(); <-done }
	h.t.Cleanup(h.stop)
}

func (h *harness) enqueue(from string, to ...string) string {
	h.t.Helper()
	rcpts := make([]spool.Recipient, len(to))
	for i, r := range to {
		rcpts[i] = spool.Recipient{To: r}
	}
	id, err := h.sp.Enqueue(context.Background(), spool.Envelope{From: from}, rcpts, []byte("Subject: t\r\n\r\nbody\r\n"))
	if err != nil {
		h.t.Fatal(err)
	}
	h.q.Notify()
	return id
}

// next waits for the next recorded outcome.
func (h *harness) next() result {
	h.t.Helper()
	select {
	case r := <-h.results:
		return r
	case <-time.After(10 * time.Second):
		h.t.Fatal("no delivery outcome within 10s")
		return result{}
	}
}

// advance moves the clock and wakes the scheduler.
func (h *harness) advance(d time.Duration) {
	h.clock.Advance(d)
	h.q.Notify()
}

func ok(string, int) Reply { return Reply{Code: 250, Text: "250 2.0.0 OK"} }

var policy = RetryPolicy{Min: time.Minute, Max: time.Hour, Lifetime: 120 * time.Hour}

func TestDeliveredMessageRetires(t *testing.T) {
	h := newHarness(t, ok, policy)
	id := h.enqueue("<a@x.test>", "<u@c.test>", "<v@c.test>", "<w@d.test>")
	for i := 0; i < 3; i++ {
		if r := h.next(); r.status != spool.StatusDelivered {
			t.Fatalf("outcome %+v", r)
		}
	}
	if _, err := h.sp.Get(id); !errors.Is(err, spool.ErrNotFound) {
		t.Fatalf("delivered message still queued: %v", err)
	}
	// One transaction per next hop: both c.test recipients together.
	var cTx, dTx int
	for _, s := range h.del.log() {
		switch s.hop {
		case "smtp:c.test":
			cTx++
			if len(s.rcpts) != 2 {
				t.Errorf("c.test transaction had %v", s.rcpts)
			}
		case "smtp:d.test":
			dTx++
		}
	}
	if cTx != 1 || dTx != 1 {
		t.Errorf("transactions: c.test %d, d.test %d", cTx, dTx)
	}
}

func TestBackoffThenDelivered(t *testing.T) {
	h := newHarness(t, func(_ string, attempt int) Reply {
		switch attempt {
		case 1:
			return Reply{Code: 421, Text: "421 4.3.2 try later"}
		case 2:
			return Reply{Code: 451, Text: "451 4.3.0 busy"}
		}
		return Reply{Code: 250, Text: "250 2.0.0 OK"}
	}, policy)
	t0 := h.clock.Now()
	id := h.enqueue("<a@x.test>", "<u@c.test>")
	if r := h.next(); r.status != spool.StatusDeferred || !strings.Contains(r.reply, "421 4.3.2") {
		t.Fatalf("first attempt: %+v", r)
	}
	m, err := h.sp.Get(id)
	if err != nil || !m.Recipients[0].NextAttempt.Equal(t0.Add(time.Minute)) || m.Recipients[0].Attempts != 1 {
		t.Fatalf("after attempt 1: %+v %v", m, err)
	}
	h.advance(59 * time.Second) // not yet due
	select {
	case r := <-h.results:
		t.Fatalf("attempt before its time: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
	h.advance(time.Second)
	if r := h.next(); r.status != spool.StatusDeferred {
		t.Fatalf("second attempt: %+v", r)
	}
	h.advance(2 * time.Minute) // the delay doubles
	if r := h.next(); r.status != spool.StatusDelivered {
		t.Fatalf("third attempt: %+v", r)
	}
	var at []time.Duration
	for _, s := range h.del.log() {
		at = append(at, s.at.Sub(t0))
	}
	want := []time.Duration{0, time.Minute, 3 * time.Minute}
	if len(at) != 3 || at[0] != want[0] || at[1] != want[1] || at[2] != want[2] {
		t.Fatalf("attempts at %v, want %v", at, want)
	}
}

func TestPermanentFailureKeepsReply(t *testing.T) {
	h := newHarness(t, func(string, int) Reply {
		return Reply{Code: 550, Text: "550 5.1.1 <u@c.test>: no such user"}
	}, policy)
	id := h.enqueue("<>", "<u@c.test>") // from <>: no DSN to account for
	r := h.next()
	if r.status != spool.StatusFailed || r.reply != "550 5.1.1 <u@c.test>: no such user" {
		t.Fatalf("outcome %+v", r)
	}
	if _, err := h.sp.Get(id); !errors.Is(err, spool.ErrNotFound) {
		t.Fatalf("failed message still queued: %v", err)
	}
	if n := len(h.del.log()); n != 1 {
		t.Fatalf("%d attempts for a permanent failure", n)
	}
	// A route that cannot exist fails without any attempt.
	h.enqueue("<>", "<u@nxdomain.test>")
	if r := h.next(); r.status != spool.StatusFailed || !strings.HasPrefix(r.reply, "550 5.1.2") {
		t.Fatalf("nxdomain outcome %+v", r)
	}
}

func TestLifetimeExpiry(t *testing.T) {
	h := newHarness(t, func(string, int) Reply { return Reply{Code: 451, Text: "451 4.4.1 down"} },
		RetryPolicy{Min: time.Minute, Max: time.Hour, Lifetime: 3 * time.Minute})
	h.enqueue("<a@x.test>", "<u@c.test>")
	h.next() // at 0
	h.advance(time.Minute)
	h.next() // at 1m, next would be 3m: the end of the lifetime
	h.advance(2 * time.Minute)
	r := h.next()
	if r.status != spool.StatusFailed || !strings.Contains(r.reply, "5.4.7") || !strings.Contains(r.reply, "451 4.4.1 down") {
		t.Fatalf("expiry outcome %+v", r)
	}
}

func TestConnectionFailureDefersAndDeadHop(t *testing.T) {
	h := newHarness(t, ok, policy)
	h.del.mu.Lock()
	h.del.dialErr = errors.New("connection refused")
	h.del.mu.Unlock()
	for i := 0; i < 5; i++ {
		h.enqueue("<a@x.test>", "<u@c.test>")
	}
	for i := 0; i < 5; i++ {
		if r := h.next(); r.status != spool.StatusDeferred || !strings.Contains(r.reply, "connection refused") {
			t.Fatalf("outcome %+v", r)
		}
	}
	h.del.mu.Lock()
	dials := h.del.dials
	h.del.mu.Unlock()
	if dials >= 5 {
		t.Errorf("%d dials to a dead next hop for 5 messages; the dead-hop window should spare most", dials)
	}
}

func TestLocalDelivery(t *testing.T) {
	h := newHarness(t, ok, policy)
	id := h.enqueue("<a@x.test>", "<alice@local.test>", "<bob@local.test>")
	for i := 0; i < 2; i++ {
		if r := h.next(); r.status != spool.StatusDelivered {
			t.Fatalf("outcome %+v", r)
		}
	}
	if _, err := h.sp.Get(id); !errors.Is(err, spool.ErrNotFound) {
		t.Fatalf("message still queued after local delivery: %v", err)
	}
	entries, err := h.sp.Mailbox("alice")
	if err != nil || len(entries) != 1 {
		t.Fatalf("alice's mailbox: %v, %v", entries, err)
	}
	got, err := h.sp.MailboxMessage("alice", entries[0].Seq)
	want := "Return-Path: <a@x.test>\r\nDelivered-To: alice@local.test\r\nSubject: t\r\n\r\nbody\r\n"
	if err != nil || string(got) != want {
		t.Fatalf("mailbox entry %q, %v", got, err)
	}
}

func TestDeferredWorkResumesAfterRestart(t *testing.T) {
	fail := true
	var mu sync.Mutex
	h := newHarness(t, func(string, int) Reply {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return Reply{Code: 451, Text: "451 4.3.0 later"}
		}
		return Reply{Code: 250, Text: "250 2.0.0 OK"}
	}, policy)
	h.enqueue("<a@x.test>", "<u@c.test>")
	h.next()
	h.stop()
	mu.Lock()
	fail = false
	mu.Unlock()
	h.start(policy)
	h.advance(30 * time.Second)
	select {
	case r := <-h.results:
		t.Fatalf("attempt before the scheduled time after restart: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
	h.advance(30 * time.Second)
	if r := h.next(); r.status != spool.StatusDelivered {
		t.Fatalf("after restart: %+v", r)
	}
}

func TestSessionReuse(t *testing.T) {
	h := newHarness(t, ok, policy)
	h.stop()
	h.conc = 1
	h.start(policy)
	for i := 0; i < 10; i++ {
		h.enqueue("<a@x.test>", "<u@c.test>")
	}
	for i := 0; i < 10; i++ {
		h.next()
	}
	h.del.mu.Lock()
	defer h.del.mu.Unlock()
	if h.del.dials != 1 {
		t.Errorf("%d sessions for 10 messages to one hop, want 1", h.del.dials)
	}
}

func TestRetryDelay(t *testing.T) {
	p := RetryPolicy{Min: time.Minute, Max: 10 * time.Minute}
	for attempts, want := range map[int]time.Duration{1: time.Minute, 2: 2 * time.Minute, 3: 4 * time.Minute, 4: 8 * time.Minute, 5: 10 * time.Minute, 50: 10 * time.Minute} {
		if got := p.Delay(attempts); got != want {
			t.Errorf("Delay(%d) = %v, want %v", attempts, got, want)
		}
	}
	if lo, hi := jitter(time.Minute, 0), jitter(time.Minute, 0.999999); lo != 54*time.Second || hi < 65*time.Second || hi > 66*time.Second {
		t.Errorf("jitter range %v..%v, want 54s..66s", lo, hi)
	}
}

// TestRecipientsAcrossScanBatches: a message whose due recipients straddle
// two reads of the schedule index still goes out as one transaction.
func TestRecipientsAcrossScanBatches(t *testing.T) {
	h := newIdleHarness(t, ok)
	sp := h.sp
	// Queued before the scheduler runs, all due at the same instant: the
	// singles fill the first read but for 6 entries, which are the first
	// of the big message's 10.
	const singles = scanBatch - 6
	for i := range singles {
		if _, err := sp.Enqueue(context.Background(), spool.Envelope{From: "<a@x.test>"}, []spool.Recipient{{To: fmt.Sprintf("<s%d@c.test>", i)}}, []byte("x\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	big := make([]spool.Recipient, 10)
	for i := range big {
		big[i] = spool.Recipient{To: fmt.Sprintf("<u%d@big.test>", i)}
	}
	if _, err := sp.Enqueue(context.Background(), spool.Envelope{From: "<a@x.test>"}, big, []byte("x\r\n")); err != nil {
		t.Fatal(err)
	}
	h.start(policy)
	for range singles + len(big) {
		if r := h.next(); r.status != spool.StatusDelivered {
			t.Fatalf("outcome %+v", r)
		}
	}
	var txs [][]string
	for _, s := range h.del.log() {
		if s.hop == "smtp:big.test" {
			txs = append(txs, s.rcpts)
		}
	}
	if len(txs) != 1 || len(txs[0]) != len(big) {
		t.Errorf("the 10 recipients of one message went out in %d transactions: %v", len(txs), txs)
	}
}
