package spool

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// bodyFiles lists the body files of a spool directory.
func bodyFiles(t *testing.T, dir string) []string { return dirNames(t, filepath.Join(dir, bodiesDir)) }

// dirNames lists the names in a directory.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// draftOf writes body to a new draft in pieces, as a session would.
func draftOf(t *testing.T, s *Spool, body []byte) *Draft {
	t.Helper()
	id, err := s.NewMessageID()
	if err != nil {
		t.Fatal(err)
	}
	d := s.NewDraft(id)
	for p := body; len(p) > 0; {
		n := min(len(p), 4096)
		if _, err := d.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	return d
}

// TestDraftFiled: a body over InlineMax is a file of its own, read back
// exactly (head in front), the file stays while the message is queued and
// survives a restart, and it goes once the retirement is synced.
func TestDraftFiled(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, GCInterval: -1})
	body := bytes.Repeat([]byte("0123456789abcdef\r\n"), 3*InlineMax/18)
	head := []byte("Received: by test\r\n")
	d := draftOf(t, s, body)
	id, err := s.EnqueueDraft(context.Background(), "", time.Hour, env1(), rcpt1("<u@c.test>"), head, d)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte(nil), head...), body...)
	checkBody(t, s, id, want)
	if f := bodyFiles(t, dir); len(f) != 1 || f[0] != id {
		t.Fatalf("body files %v, want [%s]", f, id)
	}
	b, err := s.OpenBody(id)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != int64(len(want)) {
		t.Errorf("size %d, want %d", b.Size(), len(want))
	}
	b.Close()
	s.Close()
	s = openT(t, Options{Dir: dir, GCInterval: -1})
	checkBody(t, s, id, want)
	if _, err := s.Record(context.Background(), id, []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 ok"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.waitDurable(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f := bodyFiles(t, dir); len(f) != 0 {
		t.Fatalf("body files %v after the message retired", f)
	}
}

// TestDraftInline: a small body stays inside Badger, no file.
func TestDraftInline(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, GCInterval: -1})
	body := []byte("Subject: small\r\n\r\nhi\r\n")
	id, err := s.EnqueueDraft(context.Background(), "", time.Hour, env1(), rcpt1("<u@c.test>"), []byte("H: 1\r\n"), draftOf(t, s, body))
	if err != nil {
		t.Fatal(err)
	}
	checkBody(t, s, id, append([]byte("H: 1\r\n"), body...))
	if f := bodyFiles(t, dir); len(f) != 0 {
		t.Fatalf("body files %v for an inline body", f)
	}
}

// TestDraftDiscardAndOrphans: an abandoned draft leaves no file, and a
// file no committed message owns (a crash between the draft and its
// commit) is removed at the next Open.
func TestDraftDiscardAndOrphans(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, GCInterval: -1})
	d := draftOf(t, s, bytes.Repeat([]byte("x"), 2*InlineMax))
	if f := bodyFiles(t, dir); len(f) != 1 {
		t.Fatalf("body files %v while receiving", f)
	}
	d.Discard()
	if f := bodyFiles(t, dir); len(f) != 0 {
		t.Fatalf("body files %v after Discard", f)
	}
	draftOf(t, s, bytes.Repeat([]byte("y"), 2*InlineMax)) // never committed: the crash
	s.Close()
	s = openT(t, Options{Dir: dir, GCInterval: -1})
	if f := bodyFiles(t, dir); len(f) != 0 {
		t.Fatalf("orphan body files %v after Open", f)
	}
}

// TestBodilessDropped: a crash after a message's commit but before the
// sync that acknowledges it may keep the record and lose the body file's
// name (or its tail). The next Open drops such a message, with an event
// saying why, and keeps one whose file is whole.
func TestBodilessDropped(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, GCInterval: -1})
	body := bytes.Repeat([]byte("0123456789abcdef\r\n"), 2*InlineMax/18)
	var ids []string
	for range 3 {
		id, err := s.EnqueueDraft(context.Background(), "", time.Hour, env1(), rcpt1("<u@c.test>"), nil, draftOf(t, s, body))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	s.Close()
	// What the crash left: no file for the first, half a file for the second.
	if err := os.Remove(filepath.Join(dir, bodiesDir, ids[0])); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, bodiesDir, ids[1]), int64(len(body)/2)); err != nil {
		t.Fatal(err)
	}
	s = openT(t, Options{Dir: dir, GCInterval: -1, History: time.Hour})
	for _, id := range ids[:2] {
		if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("message %s without its whole body: Get = %v, want ErrNotFound", id, err)
		}
		h, err := s.History(id)
		if err != nil || len(h.Events) == 0 || !strings.Contains(h.Events[len(h.Events)-1].Text, "lost in a crash") {
			t.Errorf("history of %s = %+v, %v; want an event saying why it went", id, h, err)
		}
	}
	checkBody(t, s, ids[2], body)
	if f := bodyFiles(t, dir); len(f) != 1 || f[0] != ids[2] {
		t.Errorf("body files %v, want [%s]", f, ids[2])
	}
}

// fakeSpace grants n bytes in all.
type fakeSpace struct{ left atomic.Int64 }

func (f *fakeSpace) Reserve(n int64) bool {
	if f.left.Add(-n) < 0 {
		f.left.Add(n)
		return false
	}
	return true
}
func (f *fakeSpace) Release(n int64) { f.left.Add(n) }

// TestDraftReservesSpace: each piece is counted as it is written; past
// the grant the write fails with ErrNoSpace, and the reservation comes
// back when the draft ends.
func TestDraftReservesSpace(t *testing.T) {
	sp := &fakeSpace{}
	sp.left.Store(3 * InlineMax)
	s := openT(t, Options{Dir: t.TempDir(), GCInterval: -1, Space: sp})
	id, _ := s.NewMessageID()
	d := s.NewDraft(id)
	var err error
	for i := 0; i < 10 && err == nil; i++ {
		_, err = d.Write(make([]byte, InlineMax))
	}
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write past the grant: %v, want ErrNoSpace", err)
	}
	if got := sp.left.Load(); got != 0 {
		t.Errorf("%d bytes left while the draft holds them, want 0", got)
	}
	d.Discard()
	if got := sp.left.Load(); got != 3*InlineMax {
		t.Errorf("%d bytes after Discard, want %d", got, 3*InlineMax)
	}
}
