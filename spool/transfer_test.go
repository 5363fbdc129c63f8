package spool

import (
	"strings"
	"testing"
	"time"
)

// TestTransferred: transferred recipients leave the schedule; the message
// retires, with a "transferred" event in its history, when the last one
// goes, held or not.
func TestTransferred(t *testing.T) {
	now := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	s := openT(t, Options{Now: func() time.Time { return now }, History: time.Hour})
	id := enqueueN(t, s, 2)
	if n, err := s.Transferred(id, []int{0}, "127.0.0.2:25", "250 2.0.0 OK: queued as X"); err != nil || n != 1 {
		t.Fatalf("first recipient: %d, %v", n, err)
	}
	due, err := s.Due(now.Add(time.Hour), 10)
	if err != nil || len(due) != 1 || due[0].Rcpt != 1 {
		t.Fatalf("due after one transfer: %+v, %v; want recipient 1 only", due, err)
	}
	if n, err := s.Transferred(id, []int{0}, "127.0.0.2:25", "250 again"); err != nil || n != 0 {
		t.Fatalf("again: %d, %v; want nothing changed", n, err)
	}
	if _, err := s.Hold(id); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Transferred(id, []int{1}, "127.0.0.2:25", "250 2.0.0 OK: queued as Y"); err != nil || n != 1 {
		t.Fatalf("second recipient (held): %d, %v", n, err)
	}
	if _, err := s.Get(id); err == nil {
		t.Fatal("still queued after its last recipient was transferred")
	}
	if due, _ := s.Due(now.Add(time.Hour), 10); len(due) != 0 {
		t.Fatalf("schedule keys left: %+v", due)
	}
	h, err := s.History(id)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, e := range h.Events {
		if e.Kind == EventTransferred {
			texts = append(texts, e.Text)
		}
	}
	if len(texts) != 2 || !strings.Contains(texts[1], "to 127.0.0.2:25: 1 recipient: 250 2.0.0 OK: queued as Y") {
		t.Errorf("transferred events %q", texts)
	}
	for _, r := range h.Recipients {
		if r.Status != StatusDelivered {
			t.Errorf("recipient %s: %s, want delivered", r.To, r.Status)
		}
	}
}
