package spool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

func openTest(t *testing.T, now func() time.Time) *Spool {
	t.Helper()
	s, err := Open(Options{Dir: t.TempDir(), Now: now, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func enqueueN(t *testing.T, s *Spool, rcpts int) string {
	t.Helper()
	rs := make([]Recipient, rcpts)
	for i := range rs {
		rs[i] = Recipient{To: fmt.Sprintf("<u%d@c.test>", i)}
	}
	id, err := s.Enqueue(context.Background(), Envelope{From: "<a@b.test>"}, rs, []byte("Subject: x\r\n\r\nhello\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRecordDeferMovesScheduleKey(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	s := openTest(t, func() time.Time { return now })
	id := enqueueN(t, s, 2)
	next := now.Add(time.Hour)
	if _, err := s.Record(context.Background(), id, []Result{{Rcpt: 0, Status: StatusDeferred, Reply: "451 4.3.0 later", NextAttempt: next}}, nil); err != nil {
		t.Fatal(err)
	}
	due, err := s.Due(now, 10)
	if err != nil || len(due) != 1 || due[0].Rcpt != 1 {
		t.Fatalf("due now = %+v, %v; want only recipient 1", due, err)
	}
	due, _ = s.Due(next, 10)
	if len(due) != 2 {
		t.Fatalf("due after an hour = %+v", due)
	}
	m, err := s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	r := m.Recipients[0]
	if r.Status != StatusDeferred || r.Attempts != 1 || r.LastReply != "451 4.3.0 later" || !r.NextAttempt.Equal(next) {
		t.Fatalf("recipient 0 = %+v", r)
	}
	evs, _ := s.Events(id)
	if len(evs) != 2 || evs[1].Kind != EventDeferred {
		t.Fatalf("events = %+v", evs)
	}
}

func TestRecordRetiresAndIgnoresDuplicates(t *testing.T) {
	s := openTest(t, nil)
	id := enqueueN(t, s, 2)
	ctx := context.Background()
	if _, err := s.Record(ctx, id, []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 ok"}}, nil); err != nil {
		t.Fatal(err)
	}
	// A second report for a final recipient changes nothing.
	if _, err := s.Record(ctx, id, []Result{{Rcpt: 0, Status: StatusFailed, Reply: "550 no"}}, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Get(id); err != nil || m.Recipients[0].Status != StatusDelivered {
		t.Fatalf("after duplicate: %+v %v", m, err)
	}
	if _, err := s.Record(ctx, id, []Result{{Rcpt: 1, Status: StatusFailed, Reply: "550 5.1.1 no"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("retired message still there: %v", err)
	}
	if _, err := s.Body(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("retired body still there: %v", err)
	}
	if due, _ := s.Due(time.Now().Add(time.Hour), 10); len(due) != 0 {
		t.Fatalf("schedule keys left: %+v", due)
	}
	if _, err := s.Record(ctx, id, []Result{{Rcpt: 1, Status: StatusDelivered}}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record on a retired message: %v", err)
	}
}

// Two next hops finishing at once for one message conflict in Badger; both
// results must land and the message retire exactly once.
func TestRecordConcurrentHops(t *testing.T) {
	s := openTest(t, nil)
	for round := 0; round < 20; round++ {
		id := enqueueN(t, s, 8)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for n := 0; n < 8; n++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Record(context.Background(), id, []Result{{Rcpt: n, Status: StatusDelivered, Reply: "250 ok"}}, nil)
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("round %d: message not retired after all hops delivered: %v", round, err)
		}
	}
}

func TestRecordMailboxExactlyOnce(t *testing.T) {
	s := openTest(t, nil)
	id := enqueueN(t, s, 1)
	res := []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 local", Mailbox: "alice", MailboxHeader: []byte("Delivered-To: alice@b.test\r\n")}}
	if _, err := s.Record(context.Background(), id, res, nil); err != nil {
		t.Fatal(err)
	}
	// A redelivery attempt after the fact finds the message gone and
	// writes no second copy.
	if _, err := s.Record(context.Background(), id, res, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second record: %v", err)
	}
	box, err := s.Mailbox("alice")
	if err != nil || len(box) != 1 {
		t.Fatalf("mailbox = %+v, %v", box, err)
	}
	got, err := s.MailboxMessage("alice", box[0].Seq)
	if want := "Delivered-To: alice@b.test\r\nSubject: x\r\n\r\nhello\r\n"; err != nil || string(got) != want || box[0].Size != int64(len(want)) {
		t.Fatalf("entry = %q (size %d), %v", got, box[0].Size, err)
	}
	if other, _ := s.Mailbox("al"); len(other) != 0 {
		t.Fatalf("mailbox prefix leak: %+v", other)
	}
}

func TestDueAfterPages(t *testing.T) {
	s := openTest(t, nil)
	for i := 0; i < 10; i++ {
		enqueueN(t, s, 3)
	}
	now := time.Now().Add(time.Minute)
	var all []Due
	var after *Due
	for {
		page, err := s.DueAfter(after, now, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
		after = &page[len(page)-1]
	}
	if len(all) != 30 {
		t.Fatalf("paged %d entries, want 30", len(all))
	}
	seen := map[Due]bool{}
	for _, d := range all {
		if seen[d] {
			t.Fatalf("entry %+v twice", d)
		}
		seen[d] = true
	}
}

func TestRecordRejectsNonOutcome(t *testing.T) {
	s := openTest(t, nil)
	id := enqueueN(t, s, 1)
	if _, err := s.Record(context.Background(), id, []Result{{Rcpt: 0, Status: StatusPending}}, nil); err == nil {
		t.Fatal("pending accepted as an outcome")
	}
	if _, err := s.Record(context.Background(), id, []Result{{Rcpt: 5, Status: StatusDelivered}}, nil); err == nil {
		t.Fatal("recipient out of range accepted")
	}
}

func TestEnqueueOnceStoresEachRecipientOnce(t *testing.T) {
	s := openTest(t, nil)
	ctx := context.Background()
	env := Envelope{From: "<a@b.test>"}
	body := []byte("Subject: x\r\n\r\nhi\r\n")
	id1, _ := s.NewMessageID()
	got, err := s.EnqueueOnce(ctx, id1, "a.test Q1", time.Hour, env, []Recipient{{To: "<u@c.test>"}, {To: "<v@c.test>"}}, body)
	if err != nil || got != id1 {
		t.Fatalf("first: %q, %v", got, err)
	}
	// The sender's retry after a lost 250: nothing new is stored, and the
	// reply names the first copy.
	id2, _ := s.NewMessageID()
	got, err = s.EnqueueOnce(ctx, id2, "a.test Q1", time.Hour, env, []Recipient{{To: "<u@c.test>"}, {To: "<v@c.test>"}}, body)
	if err != nil || got != id1 {
		t.Fatalf("repeat: %q, %v; want %q", got, err, id1)
	}
	if _, err := s.Get(id2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("repeat was stored: %v", err)
	}
	// A new recipient under the same token is stored, alone.
	id3, _ := s.NewMessageID()
	got, err = s.EnqueueOnce(ctx, id3, "a.test Q1", time.Hour, env, []Recipient{{To: "<u@c.test>"}, {To: "<w@c.test>"}}, body)
	if err != nil || got != id3 {
		t.Fatalf("partly new: %q, %v", got, err)
	}
	if m, err := s.Get(id3); err != nil || len(m.Recipients) != 1 || m.Recipients[0].To != "<w@c.test>" {
		t.Fatalf("partly new stored %+v, %v", m, err)
	}
	// Another token is another message.
	id4, _ := s.NewMessageID()
	if got, err := s.EnqueueOnce(ctx, id4, "a.test Q2", time.Hour, env, []Recipient{{To: "<u@c.test>"}}, body); err != nil || got != id4 {
		t.Fatalf("other token: %q, %v", got, err)
	}
}

// TestEnqueueOnceOrigin: the same message reaching this relay through
// another relay of a fleet (same origin token, another hop token) is not
// stored twice, and the origin is kept with the message (and survives a
// reopen) so that it goes on to the next hop.
func TestEnqueueOnceOrigin(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir})
	ctx := context.Background()
	env := Envelope{From: "<a@b.test>", Handoff: "s.test Q1"}
	body := []byte("Subject: x\r\n\r\nhi\r\n")
	rcpts := []Recipient{{To: "<u@c.test>"}}
	id1, _ := s.NewMessageID()
	if got, err := s.EnqueueOnce(ctx, id1, "mx1.test R1", time.Hour, env, rcpts, body); err != nil || got != id1 {
		t.Fatalf("via mx1: %q, %v", got, err)
	}
	id2, _ := s.NewMessageID()
	if got, err := s.EnqueueOnce(ctx, id2, "mx2.test R2", time.Hour, env, rcpts, body); err != nil || got != id1 {
		t.Fatalf("via mx2: %q, %v; want the copy via mx1, %q", got, err, id1)
	}
	// The sender itself re-sending (its origin is its hop token) is the
	// same message too.
	id3, _ := s.NewMessageID()
	if got, err := s.EnqueueOnce(ctx, id3, "s.test Q1", time.Hour, Envelope{From: "<a@b.test>", Handoff: "s.test Q1"}, rcpts, body); err != nil || got != id1 {
		t.Fatalf("from the origin: %q, %v; want %q", got, err, id1)
	}
	// Another origin is another message.
	id4, _ := s.NewMessageID()
	if got, err := s.EnqueueOnce(ctx, id4, "mx2.test R3", time.Hour, Envelope{From: "<a@b.test>", Handoff: "s.test Q2"}, rcpts, body); err != nil || got != id4 {
		t.Fatalf("other origin: %q, %v", got, err)
	}
	s.Close()
	s = openT(t, Options{Dir: dir})
	m, err := s.Get(id1)
	if err != nil || m.Handoff != "s.test Q1" {
		t.Fatalf("after reopen: %+v, %v; want origin s.test Q1", m, err)
	}
}

// TestRecordSyncedSoon: results nobody waits for are synced within
// soonSyncDelay by a round of their own when no enqueue brings one, and
// many of them share that round.
func TestRecordSyncedSoon(t *testing.T) {
	s := openT(t, Options{})
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = enqueueN(t, s, 1)
	}
	before := s.syncs.Load()
	for _, id := range ids {
		if _, err := s.Record(context.Background(), id, []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 ok"}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(soonSyncDelay + time.Second)
	for s.syncs.Load() == before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(2 * soonSyncDelay) // any further round would show by now
	if n := s.syncs.Load() - before; n != 1 {
		t.Errorf("%d syncs after 20 Records, want exactly 1", n)
	}

	// An enqueue's round covers the Records before it: no extra round.
	id := enqueueN(t, s, 1)
	before = s.syncs.Load()
	if _, err := s.Record(context.Background(), id, []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 ok"}}, nil); err != nil {
		t.Fatal(err)
	}
	enqueueN(t, s, 1)
	time.Sleep(2 * soonSyncDelay)
	if n := s.syncs.Load() - before; n != 1 {
		t.Errorf("%d syncs for a Record followed by an Enqueue, want 1 (shared)", n)
	}
}

// TestCompactAfterDrain: once the queue has drained, compaction gives
// back the disk the delivered mail used, including the mail whose
// deletion was still only in the memtable.
func TestCompactAfterDrain(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	body := []byte("Subject: x\r\n\r\n" + strings.Repeat("0123456789abcdef", 64) + "\r\n")
	for range 10000 {
		id, err := s.Enqueue(context.Background(), Envelope{From: "<a@b.test>"}, []Recipient{{To: "<u@c.test>"}}, body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Record(context.Background(), id, []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 ok"}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	before := allocated(t, dir)
	s.compactIfIdle()
	after := allocated(t, dir)
	t.Logf("10,000 messages delivered: %d KiB before compaction, %d KiB after", before>>10, after>>10)
	if after > 1<<20 {
		t.Errorf("%d KiB left after compaction of an empty queue", after>>10)
	}
	// Still writable, and the flush's own key is gone.
	enqueueN(t, s, 1)
	s.db.View(func(txn *badger.Txn) error {
		if _, err := txn.Get([]byte(prefixFlush + "x")); err == nil {
			t.Error("the flush key is still there")
		}
		return nil
	})
}

// TestFlushMemtablesWhileWriting: writes that meet a memtable flush wait
// for it instead of failing (Badger refuses writes during DropPrefix).
func TestFlushMemtablesWhileWriting(t *testing.T) {
	s := openTest(t, time.Now)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var fails atomic.Int64
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id, err := s.Enqueue(context.Background(), Envelope{From: "<a@b.test>"}, []Recipient{{To: "<u@c.test>"}}, []byte("x\r\n"))
				if err == nil {
					_, err = s.Record(context.Background(), id, []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 ok"}}, nil)
				}
				if err != nil {
					fails.Add(1)
					t.Error(err)
					return
				}
			}
		})
	}
	for range 5 {
		if err := s.flushMemtables(); err != nil {
			t.Error(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if n := fails.Load(); n > 0 {
		t.Errorf("%d writers failed during memtable flushes", n)
	}
}

// allocated sums the disk blocks of the files in dir (Badger's files are
// sparse).
func allocated(t *testing.T, dir string) int64 {
	var n int64
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		// Logs and the ballast are allocated up front by the disk-space
		// guard (doc.go, "Disk space"), whatever they hold: not mail.
		if name := e.Name(); name == "ballast" || name == "DISCARD" ||
			strings.HasSuffix(name, ".mem") || strings.HasSuffix(name, ".vlog") {
			continue
		}
		if fi, err := e.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
	}
	return n
}
