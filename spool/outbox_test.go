package spool

import (
	"context"
	"reflect"
	"testing"
	"time"
)

func openOutbox(t *testing.T, dir string, subs ...Subscriber) *Spool {
	t.Helper()
	s, err := Open(Options{Dir: dir, GCInterval: -1, Subscribers: subs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func notices(t *testing.T, s *Spool, name string) []Notice {
	t.Helper()
	ns, err := s.Notices(name, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func noticeKinds(ns []Notice) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Kind)
	}
	return out
}

// Every outcome is a notice written with it, only for the subscribers of
// its kind, and a repeated report writes none.
func TestOutboxNoticesRecordOutcomes(t *testing.T) {
	s := openOutbox(t, t.TempDir(),
		Subscriber{Name: "all", Kinds: []string{NoticeReceived, NoticeDelivered, NoticeDeferred, NoticeFailed, NoticeDSN}},
		Subscriber{Name: "failures", Kinds: []string{NoticeFailed}})
	id, err := s.Enqueue(context.Background(), Envelope{From: "<a@b.test>"},
		[]Recipient{{To: "<u0@c.test>", Params: " ORCPT=rfc822;list@c.test"}, {To: "<u1@c.test>"}}, []byte("Subject: x\r\n\r\nhi\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	next := time.Now().Add(time.Hour)
	if _, err := s.Record(context.Background(), id, []Result{
		{Rcpt: 0, Status: StatusDeferred, Reply: "451 4.4.1 try later", NextAttempt: next, NextHop: "smtp:127.0.23.9:25"},
	}, nil); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second report of the same outcome changes nothing
		if _, err := s.Record(context.Background(), id, []Result{
			{Rcpt: 0, Status: StatusDelivered, Reply: "250 2.0.0 OK", Remote: "127.0.23.9:25", NextHop: "smtp:127.0.23.9:25"},
		}, nil); err != nil {
			t.Fatal(err)
		}
	}
	dsn := &Outgoing{Envelope: Envelope{From: "<>"}, Recipients: []Recipient{{To: "<a@b.test>"}}, Body: []byte("Subject: bounce\r\n\r\n"), For: []int{1}, Action: "failed"}
	dsnID, err := s.Record(context.Background(), id, []Result{
		{Rcpt: 1, Status: StatusFailed, Reply: "550 5.1.1 no such user", Remote: "127.0.23.9:25"},
	}, dsn)
	if err != nil || dsnID == "" {
		t.Fatalf("record: %q, %v", dsnID, err)
	}

	all := notices(t, s, "all")
	want := []string{"received", "received", "deferred", "delivered", "failed", "dsn"}
	if got := noticeKinds(all); !reflect.DeepEqual(got, want) {
		t.Fatalf("notices = %v, want %v", got, want)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Errorf("seqs not increasing: %d then %d", all[i-1].Seq, all[i].Seq)
		}
	}
	def, del, dn := all[2], all[3], all[5]
	if def.ID != id || def.Rcpt != 0 || def.To != "<u0@c.test>" || def.Params != " ORCPT=rfc822;list@c.test" ||
		def.Attempt != 1 || def.Reply != "451 4.4.1 try later" || !def.NextAttempt.Equal(next) || def.NextHop != "smtp:127.0.23.9:25" || def.From != "<a@b.test>" {
		t.Errorf("deferred notice = %+v", def)
	}
	if del.Attempt != 2 || del.Remote != "127.0.23.9:25" || !del.NextAttempt.IsZero() {
		t.Errorf("delivered notice = %+v", del)
	}
	if dn.DSNID != dsnID || dn.Text != "failed" || !reflect.DeepEqual(dn.Recipients, []string{"<u1@c.test>"}) || dn.Rcpt != -1 {
		t.Errorf("dsn notice = %+v", dn)
	}
	if got := noticeKinds(notices(t, s, "failures")); !reflect.DeepEqual(got, []string{"failed"}) {
		t.Errorf("failures subscriber got %v", got)
	}

	b, err := s.NoticeBacklog("all")
	if err != nil || b.Notices != 6 || b.Oldest.IsZero() {
		t.Fatalf("backlog = %+v, %v", b, err)
	}
	// Acknowledged notices are gone; reading after a cursor skips the rest.
	if err := s.AckNotices("all", []uint64{all[0].Seq, all[1].Seq}); err != nil {
		t.Fatal(err)
	}
	if got := noticeKinds(notices(t, s, "all")); !reflect.DeepEqual(got, want[2:]) {
		t.Errorf("after ack: %v", got)
	}
	after, err := s.Notices("all", all[3].Seq, 10)
	if err != nil || !reflect.DeepEqual(noticeKinds(after), want[4:]) {
		t.Errorf("after seq %d: %v, %v", all[3].Seq, noticeKinds(after), err)
	}
	names, err := s.OutboxNames()
	if err != nil || !reflect.DeepEqual(names, []string{"all", "failures"}) {
		t.Errorf("outbox names = %v, %v", names, err)
	}
}

// Notices are durable like the outcomes they report: they are there
// after a reopen, for a subscriber the new configuration still has.
func TestOutboxSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	sub := Subscriber{Name: "hook", Kinds: []string{NoticeHeld, NoticeReleased, NoticeDeleted}}
	s, err := Open(Options{Dir: dir, GCInterval: -1, Subscribers: []Subscriber{sub}})
	if err != nil {
		t.Fatal(err)
	}
	id := enqueueN(t, s, 1)
	if _, err := s.Hold(id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Release(id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(id); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openOutbox(t, dir, sub)
	ns := notices(t, s, "hook")
	if got := noticeKinds(ns); !reflect.DeepEqual(got, []string{"held", "released", "deleted"}) {
		t.Fatalf("after reopen: %v", got)
	}
	if ns[0].ID != id || ns[0].Rcpt != -1 || ns[0].Text == "" {
		t.Errorf("held notice = %+v", ns[0])
	}
}

// The watermark stays below a notice whose transaction is still open, so
// a reader never moves its cursor past a notice that commits later.
func TestOutboxWatermark(t *testing.T) {
	s := openOutbox(t, t.TempDir(), Subscriber{Name: "w", Kinds: []string{NoticeHeld}})
	before := s.NoticeWatermark()
	txn := s.newWriteTxn()
	n := Notice{Kind: NoticeHeld, ID: "X", Rcpt: -1}
	if err := s.notify(txn, &n); err != nil {
		t.Fatal(err)
	}
	if w := s.NoticeWatermark(); w > n.Seq || w < before {
		t.Fatalf("watermark %d with notice %d in flight (before: %d)", w, n.Seq, before)
	}
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	txn.Discard()
	if w := s.NoticeWatermark(); w <= n.Seq {
		t.Fatalf("watermark %d after the commit of notice %d", w, n.Seq)
	}
	select {
	case <-s.NoticeSignal("w"):
	default:
		t.Error("no signal after a commit with a notice")
	}
	// An abandoned transaction leaves nothing and holds nothing back.
	txn = s.newWriteTxn()
	m := Notice{Kind: NoticeHeld, ID: "Y", Rcpt: -1}
	if err := s.notify(txn, &m); err != nil {
		t.Fatal(err)
	}
	txn.Discard()
	if w := s.NoticeWatermark(); w <= m.Seq {
		t.Fatalf("watermark %d after notice %d was abandoned", w, m.Seq)
	}
	if got := notices(t, s, "w"); len(got) != 1 || got[0].ID != "X" {
		t.Fatalf("notices = %+v", got)
	}
}

func TestOutboxRejectsBadSubscribers(t *testing.T) {
	for _, subs := range [][]Subscriber{
		{{Name: "Bad/Name", Kinds: []string{NoticeFailed}}},
		{{Name: "a", Kinds: []string{"bounced"}}},
		{{Name: "a"}, {Name: "a"}},
	} {
		if _, err := Open(Options{Dir: t.TempDir(), GCInterval: -1, Subscribers: subs}); err == nil {
			t.Errorf("Open accepted subscribers %+v", subs)
		}
	}
}

func TestNoticeCodec(t *testing.T) {
	n := Notice{Kind: "dsn", At: time.Unix(0, 1234567), ID: "ID", From: "<a@b>", Received: time.Unix(5, 0), Rcpt: -1,
		To: "<c@d>", Params: " NOTIFY=SUCCESS", Attempt: 3, Reply: "250 ok", Remote: "local", NextHop: "local",
		NextAttempt: time.Unix(9, 9), DSNID: "D", Text: "failed", Recipients: []string{"<x@y>", "<z@w>"}}
	b := encodeNotice(&n)
	got, err := decodeNotice(b)
	if err != nil || !reflect.DeepEqual(got, n) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for i := 0; i < len(b); i++ {
		if _, err := decodeNotice(b[:i]); err == nil {
			t.Errorf("truncated to %d bytes: no error", i)
		}
	}
}

// After a reopen the watermark is above every stored notice, so a reader
// moves past them instead of reading from the start of the outbox again.
func TestOutboxWatermarkAfterReopen(t *testing.T) {
	dir := t.TempDir()
	sub := Subscriber{Name: "hook", Kinds: []string{NoticeHeld}}
	s, err := Open(Options{Dir: dir, GCInterval: -1, Subscribers: []Subscriber{sub}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Hold(enqueueN(t, s, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openOutbox(t, dir, sub)
	ns := notices(t, s, "hook")
	if len(ns) != 1 || s.NoticeWatermark() <= ns[0].Seq {
		t.Fatalf("watermark %d after reopen, notices %+v", s.NoticeWatermark(), ns)
	}
}
