package spool

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// checkInvariants verifies doc.go's schedule invariants over the whole
// database: every pending or deferred recipient of a message that is not
// held has exactly one t/ key, at its NextAttempt; held messages have
// none; no t/, r/, b/ or e/ key belongs to a message that is gone.
func checkInvariants(t *testing.T, s *Spool) {
	t.Helper()
	want := map[string]bool{} // schedule keys that must exist
	live := map[string]bool{}
	err := s.List(func(m *Message) error {
		live[m.ID] = true
		for n, r := range m.Recipients {
			if m.Held || r.Status == StatusDelivered || r.Status == StatusFailed {
				continue
			}
			want[string(schedKey(m.Priority, dueNanos(r.NextAttempt), m.ID, uint32(n)))] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			switch string(k[:2]) {
			case prefixSchedule, prefixClass:
				if !want[string(k)] {
					t.Errorf("stray schedule key %q", k)
				}
				delete(want, string(k))
			case prefixRcpt, prefixBody, prefixEvent:
				if id := string(k[2 : 2+IDLen]); !live[id] {
					t.Errorf("key %q of a message that is gone", k)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for k := range want {
		t.Errorf("missing schedule key %q", k)
	}
}

func openHistory(t *testing.T, clk *fakeClock) *Spool {
	t.Helper()
	return openT(t, Options{Now: clk.Now, History: time.Hour})
}

func kinds(evs []Event) string {
	var k []string
	for _, e := range evs {
		k = append(k, e.Kind)
	}
	return strings.Join(k, ",")
}

func TestHoldRelease(t *testing.T) {
	clk := newClock(t0)
	s := openHistory(t, clk)
	id := mustEnqueue(t, s, env1(), []Recipient{{To: "<a@c.test>"}, {To: "<b@c.test>"}}, []byte("x"))
	if n, err := s.Hold(id); n != 2 || err != nil {
		t.Fatalf("Hold = %d, %v; want 2 recipients", n, err)
	}
	checkInvariants(t, s)
	if due, _ := s.Due(t0.Add(time.Hour), 10); len(due) != 0 {
		t.Fatalf("held message is due: %+v", due)
	}
	if m, _ := s.Get(id); !m.Held {
		t.Fatal("message not marked held")
	}
	if n, err := s.Hold(id); n != 0 || err != nil {
		t.Fatalf("second Hold = %d, %v; want 0, nil", n, err)
	}
	if _, err := s.Retry(id); !errors.Is(err, ErrHeld) {
		t.Fatalf("Retry of a held message: %v, want ErrHeld", err)
	}
	// A deferral recorded while held (a delivery that was in flight)
	// schedules nothing.
	if _, err := s.Record(context.Background(), id, []Result{{Rcpt: 0, Status: StatusDeferred, Reply: "451 later", NextAttempt: t0.Add(time.Minute)}}, nil); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, s)
	clk.Set(t0.Add(time.Hour))
	if n, err := s.Release(id); n != 2 || err != nil {
		t.Fatalf("Release = %d, %v; want 2", n, err)
	}
	checkInvariants(t, s)
	due, _ := s.Due(t0.Add(time.Hour), 10)
	if len(due) != 2 || !due[0].At.Equal(t0.Add(time.Hour)) {
		t.Fatalf("after release due = %+v, want both recipients due now", due)
	}
	if n, err := s.Release(id); n != 0 || err != nil {
		t.Fatalf("second Release = %d, %v; want 0, nil", n, err)
	}
	evs, _ := s.Events(id)
	if got := kinds(evs); got != "received,held,deferred,released" {
		t.Errorf("events %s", got)
	}
}

// Hold survives a reopen: the state is in the spool, not in memory.
func TestHoldSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	id := mustEnqueue(t, s, env1(), rcpt1("<a@c.test>"), []byte("x"))
	if _, err := s.Hold(id); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openT(t, Options{Dir: dir})
	if due, _ := s.Due(time.Now().Add(time.Hour), 10); len(due) != 0 {
		t.Fatalf("held message due after reopen: %+v", due)
	}
	if m, err := s.Get(id); err != nil || !m.Held {
		t.Fatalf("after reopen: %+v, %v", m, err)
	}
}

func TestRetry(t *testing.T) {
	clk := newClock(t0)
	s := openHistory(t, clk)
	id := mustEnqueue(t, s, env1(), []Recipient{{To: "<a@c.test>"}, {To: "<b@c.test>"}}, []byte("x"))
	ctx := context.Background()
	if _, err := s.Record(ctx, id, []Result{
		{Rcpt: 0, Status: StatusDeferred, Reply: "451 later", NextAttempt: t0.Add(time.Hour)},
		{Rcpt: 1, Status: StatusDelivered, Reply: "250 ok"},
	}, nil); err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(time.Minute))
	if n, err := s.Retry(id); n != 1 || err != nil {
		t.Fatalf("Retry = %d, %v; want the 1 deferred recipient", n, err)
	}
	checkInvariants(t, s)
	due, _ := s.Due(t0.Add(time.Minute), 10)
	if len(due) != 1 || due[0].Rcpt != 0 {
		t.Fatalf("due after retry: %+v", due)
	}
	if n, err := s.Retry(id); n != 0 || err != nil {
		t.Fatalf("second Retry = %d, %v; want 0 (already due)", n, err)
	}
	if _, err := s.Retry("0000000000000"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Retry of an unknown ID: %v", err)
	}
}

func TestDeleteKeepsHistory(t *testing.T) {
	clk := newClock(t0)
	s := openHistory(t, clk)
	id := mustEnqueue(t, s, env1(), []Recipient{{To: "<a@c.test>"}, {To: "<b@c.test>"}}, []byte("x"))
	if _, err := s.Record(context.Background(), id, []Result{{Rcpt: 0, Status: StatusDeferred, Reply: "451 4.4.1 refused", NextAttempt: t0.Add(time.Hour)}}, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Delete(id); n != 2 || err != nil {
		t.Fatalf("Delete = %d, %v; want 2 undelivered recipients", n, err)
	}
	checkInvariants(t, s)
	if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if _, err := s.Delete(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
	h, err := s.History(id)
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(h.Events); got != "received,deferred,deleted" {
		t.Errorf("history events %s", got)
	}
	if h.From != "<a@a.test>" || len(h.Recipients) != 2 || h.Recipients[0].Status != StatusDeferred || h.Recipients[0].LastReply != "451 4.4.1 refused" {
		t.Errorf("history %+v", h)
	}
}

func TestHistoryAfterDelivery(t *testing.T) {
	clk := newClock(t0)
	s := openHistory(t, clk)
	// One message delivered at the first attempt (no e/ keys but
	// "received"), one held and released first (operator events), one
	// deferred first.
	ids := make([]string, 3)
	for i := range ids {
		ids[i] = mustEnqueue(t, s, env1(), rcpt1(fmt.Sprintf("<u%d@c.test>", i)), []byte("x"))
	}
	ctx := context.Background()
	if _, err := s.Hold(ids[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Release(ids[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(ctx, ids[2], []Result{{Rcpt: 0, Status: StatusDeferred, Reply: "451 later", NextAttempt: t0.Add(time.Minute)}}, nil); err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(2 * time.Minute))
	for _, id := range ids {
		if _, err := s.Record(ctx, id, []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 2.0.0 OK: queued as REMOTE1", Remote: "127.0.0.3:25"}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	checkInvariants(t, s) // no e/ key left behind, whichever path retired them
	want := []string{"received,delivered", "received,held,released,delivered", "received,deferred,delivered"}
	for i, id := range ids {
		h, err := s.History(id)
		if err != nil {
			t.Fatalf("History(%s): %v", id, err)
		}
		if got := kinds(h.Events); got != want[i] {
			t.Errorf("message %d: events %s, want %s", i, got, want[i])
		}
		last := h.Events[len(h.Events)-1]
		if !strings.Contains(last.Text, "relay=127.0.0.3:25") || !strings.Contains(last.Text, "queued as REMOTE1") {
			t.Errorf("message %d: final event %+v lacks the remote and its reply", i, last)
		}
		if r := h.Recipients[0]; r.Status != StatusDelivered || r.LastReply != "250 2.0.0 OK: queued as REMOTE1" {
			t.Errorf("message %d: recipient %+v", i, r)
		}
		if !h.At.Equal(t0.Add(2 * time.Minute)) {
			t.Errorf("message %d retired at %v", i, h.At)
		}
	}
	if _, err := s.History("0000000000000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("History of an unknown ID: %v", err)
	}
}

func TestNoHistoryWhenDisabled(t *testing.T) {
	s := openT(t, Options{})
	id := mustEnqueue(t, s, env1(), rcpt1("<a@c.test>"), []byte("x"))
	if _, err := s.Record(context.Background(), id, []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 ok"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.History(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("History with the window off: %v", err)
	}
}

func TestResolve(t *testing.T) {
	clk := newClock(t0)
	s := openHistory(t, clk)
	a := mustEnqueue(t, s, env1(), rcpt1("<a@c.test>"), []byte("x"))
	clk.Set(t0.Add(time.Hour))
	b := mustEnqueue(t, s, env1(), rcpt1("<b@c.test>"), []byte("x"))
	common := 0
	for a[common] == b[common] {
		common++
	}
	for _, c := range []struct {
		in, want string
		err      error
	}{
		{a, a, nil},
		{strings.ToLower(a[:common+1]), a, nil},
		{b[:common+1], b, nil},
		{a[:common], "", ErrAmbiguous},
		{"Z", "", ErrNotFound},
		{"!", "", ErrNotFound},
		{a + "0", "", ErrNotFound},
	} {
		got, err := s.Resolve(c.in)
		if got != c.want || (c.err == nil) != (err == nil) || (c.err != nil && !errors.Is(err, c.err)) {
			t.Errorf("Resolve(%q) = %q, %v; want %q, %v", c.in, got, err, c.want, c.err)
		}
	}
	// A retired message is still found, in the history.
	if _, err := s.Delete(a); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Resolve(a[:common+1]); got != a || err != nil {
		t.Errorf("Resolve of a retired message = %q, %v", got, err)
	}
}

func TestStats(t *testing.T) {
	clk := newClock(t0)
	s := openHistory(t, clk)
	a := mustEnqueue(t, s, env1(), []Recipient{{To: "<a@c.test>"}, {To: "<b@d.test>"}}, []byte("x"))
	clk.Set(t0.Add(time.Minute))
	b := mustEnqueue(t, s, env1(), rcpt1("<c@c.test>"), []byte("x"))
	if _, err := s.Record(context.Background(), a, []Result{{Rcpt: 1, Status: StatusDeferred, Reply: "451", NextAttempt: t0.Add(time.Hour)}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Hold(b); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats(func(to string) string { return to[strings.IndexByte(to, '@')+1 : len(to)-1] })
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 2 || st.Held != 1 || st.ByStatus[StatusPending] != 2 || st.ByStatus[StatusDeferred] != 1 ||
		st.ByHop["c.test"] != 2 || st.ByHop["d.test"] != 1 || st.OldestID != a || !st.Oldest.Equal(t0) {
		t.Errorf("stats %+v", st)
	}
	if n, err := s.DiskSize(); err != nil || n <= 0 {
		t.Errorf("DiskSize = %d, %v", n, err)
	}
}

func TestRetiredCodec(t *testing.T) {
	rec := &msgRecord{Envelope: Envelope{From: "<a@b>", Received: t0, Held: true}, Size: 3, NRcpt: 1, ChunkSize: ChunkSize, ExtraEvents: true}
	b, err := encodeRetired(t0, rec, []Recipient{{To: "<x@y>", Status: StatusFailed, LastReply: "550 no"}}, []Event{{At: t0, Kind: "failed", Text: "550 no"}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeRetired("ID", b)
	if err != nil || r.From != "<a@b>" || r.Recipients[0].LastReply != "550 no" || r.Events[0].Kind != "failed" || !r.At.Equal(t0) {
		t.Fatalf("decodeRetired = %+v, %v", r, err)
	}
	for i := 0; i < len(b); i++ {
		if _, err := decodeRetired("ID", b[:i]); err == nil {
			t.Errorf("decodeRetired(truncated to %d): no error", i)
		}
	}
	if m, err := decodeMessage(encodeMessage(rec)); err != nil || !m.ExtraEvents {
		t.Errorf("ExtraEvents lost: %+v, %v", m, err)
	}
}

// BenchmarkRetire measures what keeping history costs on the delivery
// path: recording the delivery of a message, which retires it.
func BenchmarkRetire(b *testing.B) {
	for _, hist := range []time.Duration{0, 72 * time.Hour} {
		b.Run(fmt.Sprintf("history=%v", hist), func(b *testing.B) {
			s := openT(b, Options{History: hist})
			body := make([]byte, 1024)
			ctx := context.Background()
			ids := make([]string, b.N)
			for i := range ids {
				var err error
				if ids[i], err = s.Enqueue(ctx, env1(), rcpt1("<u@c.test>"), body); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for _, id := range ids {
				if _, err := s.Record(ctx, id, []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 2.0.0 OK: queued as 0123456789ABC", Remote: "127.0.0.3:2525"}}, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestRetryAll(t *testing.T) {
	clk := newClock(t0)
	s := openHistory(t, clk)
	ctx := context.Background()
	var ids []string
	for i := 0; i < 3; i++ {
		id := mustEnqueue(t, s, env1(), rcpt1(fmt.Sprintf("<u%d@c.test>", i)), []byte("x"))
		if _, err := s.Record(ctx, id, []Result{{Rcpt: 0, Status: StatusDeferred, Reply: "451", NextAttempt: t0.Add(time.Hour)}}, nil); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	mustEnqueue(t, s, env1(), rcpt1("<due@c.test>"), []byte("x")) // due already: not changed
	if _, err := s.Hold(ids[1]); err != nil {
		t.Fatal(err)
	}
	got, err := s.RetryAll()
	if err != nil || len(got) != 2 || got[0] != (Retried{ids[0], 1}) || got[1] != (Retried{ids[2], 1}) {
		t.Fatalf("RetryAll = %+v, %v; want %s and %s", got, err, ids[0], ids[2])
	}
	checkInvariants(t, s)
	if due, _ := s.Due(t0, 10); len(due) != 3 {
		t.Errorf("%d recipients due after RetryAll, want 3", len(due))
	}
}

// The summary holds every recipient as it ended, whether its outcome came
// in the retiring transaction or in an earlier one.
func TestHistoryKeepsEveryRecipient(t *testing.T) {
	clk := newClock(t0)
	s := openHistory(t, clk)
	id := mustEnqueue(t, s, env1(), []Recipient{{To: "<a@c.test>"}, {To: "<b@c.test>"}, {To: "<c@c.test>"}}, []byte("x"))
	ctx := context.Background()
	if _, err := s.Record(ctx, id, []Result{{Rcpt: 1, Status: StatusDelivered, Reply: "250 first"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(ctx, id, []Result{{Rcpt: 0, Status: StatusFailed, Reply: "550 no"}, {Rcpt: 2, Status: StatusDelivered, Reply: "250 last"}}, nil); err != nil {
		t.Fatal(err)
	}
	h, err := s.History(id)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		status Status
		reply  string
	}{{StatusFailed, "550 no"}, {StatusDelivered, "250 first"}, {StatusDelivered, "250 last"}}
	for i, w := range want {
		if r := h.Recipients[i]; r.Status != w.status || r.LastReply != w.reply || r.Attempts != 1 {
			t.Errorf("recipient %d: %+v, want %s %q after 1 attempt", i, r, w.status, w.reply)
		}
	}
}

// A message stored before the "received" event was made from the
// envelope has it under e/: it is read once, kept in the history, and
// deleted with the message.
func TestStoredReceivedEvent(t *testing.T) {
	clk := newClock(t0)
	s := openHistory(t, clk)
	id := mustEnqueue(t, s, env1(), rcpt1("<a@c.test>"), []byte("x"))
	s.fresh.drop(id)
	err := s.update(func(txn *wtxn) error {
		rec, err := getMsgRecord(txn, id)
		if err != nil {
			return err
		}
		rec.InlineReceived = false
		if err := txn.Set(msgKey(id), encodeMessage(rec)); err != nil {
			return err
		}
		ev := receivedEvent(rec)
		ev.Text = "stored " + ev.Text
		idv, _ := parseID(id)
		return txn.Set(eventKey(id, idv), encodeEvent(&ev))
	})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.Events(id)
	if err != nil || kinds(evs) != "received" || !strings.HasPrefix(evs[0].Text, "stored from <a@a.test>") {
		t.Fatalf("Events = %+v, %v", evs, err)
	}
	if _, err := s.Record(context.Background(), id, []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 ok"}}, nil); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, s) // the stored event went with the message
	h, err := s.History(id)
	if err != nil || kinds(h.Events) != "received,delivered" || !strings.HasPrefix(h.Events[0].Text, "stored ") {
		t.Fatalf("History = %+v, %v", h, err)
	}
}

// A new message's "received" event comes from its envelope: one event,
// no e/ key.
func TestReceivedEventFromEnvelope(t *testing.T) {
	clk := newClock(t0)
	s := openHistory(t, clk)
	env := env1()
	env.AuthUser = "alice"
	id := mustEnqueue(t, s, env, []Recipient{{To: "<a@c.test>"}, {To: "<b@c.test>"}}, []byte("hello"))
	evs, err := s.Events(id)
	if err != nil || len(evs) != 1 {
		t.Fatalf("Events = %+v, %v", evs, err)
	}
	want := Event{At: t0, Kind: EventReceived, Rcpt: -1, Text: "from <a@a.test> size 5 rcpts 2 client 192.0.2.1 helo a.test auth alice"}
	if got := evs[0]; !got.At.Equal(want.At) || got.Kind != want.Kind || got.Rcpt != want.Rcpt || got.Text != want.Text {
		t.Errorf("received event %+v, want %+v", got, want)
	}
	n := 0
	s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: eventPrefix(id)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if n != 0 {
		t.Errorf("%d e/ keys stored, want 0", n)
	}
}
