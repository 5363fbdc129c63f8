package spool

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// deliverLocal writes a mailbox entry the way Record does on local
// delivery, without a queued message behind it.
func deliverLocal(t *testing.T, s *Spool, user string, body []byte) {
	t.Helper()
	if err := s.update(func(txn *wtxn) error {
		return s.putMailbox(txn, user, []byte("Delivered-To: "+user+"@b.test\r\n"), body)
	}); err != nil {
		t.Fatal(err)
	}
}

func TestListMailboxExactSizes(t *testing.T) {
	s := openT(t, Options{})
	small := []byte("Subject: small\r\n\r\nhi\r\n")
	big := randomBytes(3<<20+5, 7) // in Badger's value log, where sizes are estimates
	deliverLocal(t, s, "alice", small)
	deliverLocal(t, s, "alice", big)
	deliverLocal(t, s, "alicia", small) // a name that shares a prefix
	box, err := s.ListMailbox("alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(box) != 2 || box[0].Seq >= box[1].Seq {
		t.Fatalf("ListMailbox = %+v, want 2 entries oldest first", box)
	}
	hdr := int64(len("Delivered-To: alice@b.test\r\n"))
	for i, want := range []int64{hdr + int64(len(small)), hdr + int64(len(big))} {
		if box[i].Size != want {
			t.Errorf("entry %d: Size %d, want %d", i, box[i].Size, want)
		}
		msg, err := s.MailboxMessage("alice", box[i].Seq)
		if err != nil || int64(len(msg)) != box[i].Size {
			t.Errorf("entry %d: message of %d bytes (%v), listed as %d", i, len(msg), err, box[i].Size)
		}
	}
	if _, err := s.ListMailbox("a/b"); err == nil {
		t.Error("ListMailbox accepted a name with '/'")
	}
}

func TestDeleteMailboxEntries(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir})
	for _, b := range []string{"one", "two", "three"} {
		deliverLocal(t, s, "bob", []byte("Subject: "+b+"\r\n\r\n"+b+"\r\n"))
	}
	deliverLocal(t, s, "bobby", []byte("x\r\n"))
	box, _ := s.ListMailbox("bob")
	ctx := context.Background()
	if err := s.DeleteMailboxEntries(ctx, "bob", []uint64{box[0].Seq, box[2].Seq}); err != nil {
		t.Fatal(err)
	}
	// Repeating a deletion, or naming an entry that never existed, is harmless.
	if err := s.DeleteMailboxEntries(ctx, "bob", []uint64{box[0].Seq, 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, Options{Dir: dir})
	left, err := s.ListMailbox("bob")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Seq != box[1].Seq {
		t.Fatalf("after deleting 1 and 3 and reopening: %+v, want only seq %d", left, box[1].Seq)
	}
	msg, _ := s.MailboxMessage("bob", left[0].Seq)
	if !bytes.Contains(msg, []byte("Subject: two")) {
		t.Errorf("the message left is %q", msg)
	}
	if _, err := s.MailboxMessage("bob", box[0].Seq); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted message: err %v, want ErrNotFound", err)
	}
	if other, _ := s.ListMailbox("bobby"); len(other) != 1 {
		t.Errorf("another mailbox lost entries: %+v", other)
	}
	if err := s.DeleteMailboxEntries(ctx, "", []uint64{1}); err == nil {
		t.Error("DeleteMailboxEntries accepted an empty mailbox name")
	}
}

// mailFiles lists the mailbox files of a spool directory.
func mailFiles(t *testing.T, dir string) []string { return dirNames(t, filepath.Join(dir, mailDir)) }

// TestMailboxFiledBody: local delivery of a message whose body is a file
// links the file into the mailbox instead of copying it into Badger; the
// entry reads back whole, with an exact size, after the message retired
// and after a restart; deleting it removes the file; a link no entry names
// (a crash before the entry committed) goes at the next Open.
func TestMailboxFiledBody(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, GCInterval: -1})
	body := randomBytes(5<<20, 3)
	head := []byte("Received: by b.test\r\n")
	id, err := s.EnqueueDraft(context.Background(), "", time.Hour, env1(), rcpt1("<alice@b.test>"), head, draftOf(t, s, body))
	if err != nil {
		t.Fatal(err)
	}
	hdr := []byte("Return-Path: <a@c.test>\r\nDelivered-To: alice@b.test\r\n")
	if _, err := s.Record(context.Background(), id, []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 delivered",
		Mailbox: "alice", MailboxHeader: hdr}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.waitDurable(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := slices.Concat(hdr, head, body)
	check := func(when string) uint64 {
		t.Helper()
		box, err := s.ListMailbox("alice")
		if err != nil || len(box) != 1 || box[0].Size != int64(len(want)) {
			t.Fatalf("%s: ListMailbox = %+v, %v; want one entry of %d bytes", when, box, err, len(want))
		}
		msg, err := s.MailboxMessage("alice", box[0].Seq)
		if err != nil || !bytes.Equal(msg, want) {
			t.Fatalf("%s: message of %d bytes (%v), want %d bytes as delivered", when, len(msg), err, len(want))
		}
		return box[0].Seq
	}
	check("after delivery")
	if f := bodyFiles(t, dir); len(f) != 0 {
		t.Errorf("body files %v after the message retired", f)
	}
	if f := mailFiles(t, dir); len(f) != 1 {
		t.Errorf("mailbox files %v, want one", f)
	}
	s.Close()
	// A link without an entry, as a crash before the commit leaves.
	if err := os.WriteFile(filepath.Join(dir, mailDir, "00000000000000ff"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = openT(t, Options{Dir: dir, GCInterval: -1})
	seq := check("after a restart")
	if f := mailFiles(t, dir); len(f) != 1 {
		t.Errorf("mailbox files %v after Open, want the entry's only", f)
	}
	if err := s.DeleteMailboxEntries(context.Background(), "alice", []uint64{seq}); err != nil {
		t.Fatal(err)
	}
	if f := mailFiles(t, dir); len(f) != 0 {
		t.Errorf("mailbox files %v after the entry was deleted", f)
	}
}
