package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relay-mta/relay/spool"
)

// receiver is an HTTP endpoint on 127.0.23.2 that records what it gets;
// answer decides each reply (nil: 200).
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	events []Event
	heads  []http.Header
	bodies [][]byte
	answer func(ev Event) int
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{}
	l, err := net.Listen("tcp", "127.0.23.2:0")
	if err != nil {
		t.Fatal(err)
	}
	rc.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev Event
		if err := json.Unmarshal(body, &ev); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		answer := rc.answer
		rc.mu.Unlock()
		code := http.StatusOK
		if answer != nil {
			code = answer(ev)
		}
		if code == http.StatusOK {
			rc.mu.Lock()
			rc.events = append(rc.events, ev)
			rc.heads = append(rc.heads, r.Header.Clone())
			rc.bodies = append(rc.bodies, body)
			rc.mu.Unlock()
		}
		w.WriteHeader(code)
	}))
	rc.srv.Listener.Close()
	rc.srv.Listener = l
	rc.srv.Start()
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) got() []Event {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]Event(nil), rc.events...)
}

func openSpool(t *testing.T, kinds ...string) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), GCInterval: -1, Subscribers: []spool.Subscriber{{Name: "h", Kinds: kinds}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

// deliver stores a message for n recipients and records each as
// delivered: n "delivered" events.
func deliver(t *testing.T, sp *spool.Spool, n int) string {
	t.Helper()
	rcpts := make([]spool.Recipient, n)
	results := make([]spool.Result, n)
	for i := range rcpts {
		rcpts[i] = spool.Recipient{To: fmt.Sprintf("<u%d@b.test>", i), Params: " ORCPT=rfc822;list+2Bx@b.test"}
		results[i] = spool.Result{Rcpt: i, Status: spool.StatusDelivered, Reply: "250 2.0.0 OK", Remote: "127.0.23.9:25", NextHop: "smtp:127.0.23.9:25"}
	}
	id, err := sp.Enqueue(context.Background(), spool.Envelope{From: "<s@a.test>"}, rcpts, []byte("Subject: t\r\n\r\nx\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Record(context.Background(), id, results, nil); err != nil {
		t.Fatal(err)
	}
	return id
}

func run(t *testing.T, p *Poster) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func backlog(t *testing.T, sp *spool.Spool) int {
	t.Helper()
	b, err := sp.NoticeBacklog("h")
	if err != nil {
		t.Fatal(err)
	}
	return b.Notices
}

func TestPostsSignedEvents(t *testing.T) {
	sp := openSpool(t, spool.NoticeReceived, spool.NoticeDelivered)
	rc := newReceiver(t)
	secret := []byte("s3cret")
	p := New(Hook{Name: "h", URL: rc.srv.URL + "/ev", Secret: secret}, Options{Source: sp, Hostname: "b.test"})
	id := deliver(t, sp, 2)
	run(t, p)
	waitFor(t, "4 events", func() bool { return len(rc.got()) == 4 })
	waitFor(t, "an empty backlog", func() bool { return backlog(t, sp) == 0 })

	evs := rc.got()
	byKind := map[string]int{}
	for i, ev := range evs {
		byKind[ev.Event]++
		if ev.QueueID != id || ev.Relay != "b.test" || ev.From != "s@a.test" || ev.OriginalRecipient != "list+x@b.test" || ev.Received.IsZero() {
			t.Errorf("event %d = %+v", i, ev)
		}
		h := rc.heads[i]
		if h.Get("Idempotency-Key") != ev.ID || h.Get("X-Relay-Event") != ev.Event || h.Get("Content-Type") != "application/json" {
			t.Errorf("headers of event %d: %v", i, h)
		}
		if _, err := Verify(secret, h.Get(SignatureHeader), rc.bodies[i]); err != nil {
			t.Errorf("event %d: %v", i, err)
		}
		if _, err := Verify([]byte("other"), h.Get(SignatureHeader), rc.bodies[i]); err == nil {
			t.Errorf("event %d verifies with the wrong secret", i)
		}
		if ev.Event == "delivered" {
			want := fmt.Sprintf("b.test:%s:%s:1:delivered", id, strings.TrimPrefix(strings.TrimSuffix(ev.Recipient, "@b.test"), "u"))
			if ev.ID != want || ev.Attempt != 1 || ev.Reply != "250 2.0.0 OK" || ev.NextHop != "smtp:127.0.23.9:25" || ev.Remote != "127.0.23.9:25" {
				t.Errorf("delivered event = %+v (want id %s)", ev, want)
			}
		}
	}
	if byKind["received"] != 2 || byKind["delivered"] != 2 {
		t.Errorf("events by kind: %v", byKind)
	}
	if st := p.Status(); st.Posted != 4 || st.Failures != 0 {
		t.Errorf("status = %+v", st)
	}
}

// A receiver that fails keeps every event in the outbox; once it answers
// again, every event arrives, and the wait between failed rounds grows.
func TestRetriesWhileTheReceiverFails(t *testing.T) {
	sp := openSpool(t, spool.NoticeDelivered)
	rc := newReceiver(t)
	var fails atomic.Int32
	rc.answer = func(Event) int {
		if fails.Add(1) <= 5 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	var results sync.Map
	p := New(Hook{Name: "h", URL: rc.srv.URL, RetryMin: 20 * time.Millisecond, RetryMax: 80 * time.Millisecond, Concurrency: 1},
		Options{Source: sp, Hostname: "b.test", OnResult: func(r string) {
			v, _ := results.LoadOrStore(r, new(atomic.Int32))
			v.(*atomic.Int32).Add(1)
		}})
	for range 10 {
		deliver(t, sp, 1)
	}
	start := time.Now()
	run(t, p)
	waitFor(t, "10 events", func() bool { return len(rc.got()) == 10 })
	// 5 failed rounds: 20+40+80+80+80 ms, give or take 10%.
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Errorf("all posted after %v: the waits did not grow", el)
	}
	waitFor(t, "an empty backlog", func() bool { return backlog(t, sp) == 0 })
	if st := p.Status(); !strings.Contains(st.LastError, "503") || st.Failures != 0 {
		t.Errorf("status = %+v", st)
	}
	if v, _ := results.Load(ResultRetry); v == nil || v.(*atomic.Int32).Load() != 5 {
		t.Errorf("retry results: %v", v)
	}
	seen := map[string]bool{}
	for _, ev := range rc.got() {
		if seen[ev.ID] {
			t.Errorf("event %s posted twice after 2xx", ev.ID)
		}
		seen[ev.ID] = true
	}
}

// A 4xx the receiver means for good drops that event only; a 404 is
// taken for a receiver not there yet and retried.
func TestRefusedEventIsDropped(t *testing.T) {
	sp := openSpool(t, spool.NoticeDelivered)
	rc := newReceiver(t)
	var poison string
	var notFound atomic.Int32
	rc.answer = func(ev Event) int {
		if ev.QueueID == poison {
			return http.StatusUnprocessableEntity
		}
		if notFound.Add(1) <= 2 {
			return http.StatusNotFound
		}
		return http.StatusOK
	}
	var ids []string
	for i := range 5 {
		id := deliver(t, sp, 1)
		if i == 2 {
			poison = id
		}
		ids = append(ids, id)
	}
	p := New(Hook{Name: "h", URL: rc.srv.URL, RetryMin: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond},
		Options{Source: sp, Hostname: "b.test"})
	run(t, p)
	waitFor(t, "an empty backlog", func() bool { return backlog(t, sp) == 0 })
	got := map[string]bool{}
	for _, ev := range rc.got() {
		got[ev.QueueID] = true
	}
	for _, id := range ids {
		if got[id] == (id == poison) {
			t.Errorf("message %s: posted %v (poison: %v)", id, got[id], id == poison)
		}
	}
}

func TestOldEventsExpire(t *testing.T) {
	sp := openSpool(t, spool.NoticeDelivered)
	rc := newReceiver(t)
	deliver(t, sp, 3)
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	p := New(Hook{Name: "h", URL: rc.srv.URL, Lifetime: time.Hour}, Options{Source: sp, Hostname: "b.test", Now: later})
	run(t, p)
	waitFor(t, "an empty backlog", func() bool { return backlog(t, sp) == 0 })
	if n := len(rc.got()); n != 0 {
		t.Errorf("%d expired events posted", n)
	}
}

// Outcomes recorded by many goroutines while the poster reads: each
// transaction commits in its own time, and none of their events is
// skipped by the poster's cursor.
func TestNoEventSkippedUnderConcurrentCommits(t *testing.T) {
	sp := openSpool(t, spool.NoticeDelivered)
	rc := newReceiver(t)
	p := New(Hook{Name: "h", URL: rc.srv.URL, Concurrency: 8}, Options{Source: sp, Hostname: "b.test"})
	run(t, p)
	var wg sync.WaitGroup
	var mu sync.Mutex
	want := map[string]bool{}
	for range 8 {
		wg.Go(func() {
			for range 25 {
				id := deliver(t, sp, 2)
				mu.Lock()
				want[id] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	waitFor(t, "400 events", func() bool { return len(rc.got()) >= 400 })
	got := map[string]int{}
	for _, ev := range rc.got() {
		got[ev.QueueID]++
	}
	for id := range want {
		if got[id] != 2 {
			t.Errorf("message %s: %d events, want 2", id, got[id])
		}
	}
}

func TestVerifyRejectsTampering(t *testing.T) {
	secret := []byte("k")
	body := []byte(`{"id":"x"}`)
	h := Sign(secret, time.Unix(1700000000, 0), body)
	if !strings.HasPrefix(h, "t=1700000000,v1=") {
		t.Fatalf("header %q", h)
	}
	if at, err := Verify(secret, h, body); err != nil || at.Unix() != 1700000000 {
		t.Fatalf("verify: %v, %v", at, err)
	}
	for _, bad := range []string{
		strings.Replace(h, "t=1700000000", "t=1700000001", 1),
		"v1=00",
		"t=1,v1=zz",
	} {
		if _, err := Verify(secret, bad, body); err == nil {
			t.Errorf("%q verified", bad)
		}
	}
	if _, err := Verify(secret, h, []byte(`{"id":"y"}`)); err == nil {
		t.Error("a changed body verified")
	}
}
