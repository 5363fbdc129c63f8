package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// readStored reads message id and its body from Badger, past the cache.
func readStored(t *testing.T, s *Spool, id string) (*Message, []byte) {
	t.Helper()
	s.fresh.drop(id)
	m, err := s.Get(id)
	if err != nil {
		t.Fatalf("Get(%s) from the store: %v", id, err)
	}
	body, err := s.Body(id)
	if err != nil {
		t.Fatalf("Body(%s) from the store: %v", id, err)
	}
	return m, body
}

// The cache serves exactly what Badger would: same envelope, times,
// recipient states and body, for plain, held and handed-off messages.
func TestFreshCacheMatchesStore(t *testing.T) {
	clk := newClock(t0)
	s := openT(t, Options{Now: clk.Now})
	env := Envelope{From: "<@x.test:a@a.test>", MailParams: " SIZE=100", Client: "2001:db8::1", Helo: "a.test", AuthUser: "alice", Hops: 3}
	rcpts := []Recipient{
		{To: "<@a.test,@b.test:u@c.test>", Params: " NOTIFY=FAILURE", Status: StatusDelivered, Attempts: 7, LastReply: "ignored"},
		{To: "<postmaster>"},
	}
	held := env
	held.Held = true
	earlier := env
	earlier.Received = t0.Add(-time.Minute).In(time.UTC)
	ctx := context.Background()
	var ids []string
	for _, e := range []Envelope{env, held, earlier} {
		ids = append(ids, mustEnqueue(t, s, e, rcpts, []byte("Subject: x\r\n\r\nbody\r\n")))
	}
	ids = append(ids, mustEnqueue(t, s, env, rcpts, nil))
	once, _ := s.NewMessageID()
	if got, err := s.EnqueueOnce(ctx, once, "tok", time.Hour, env, rcpts, []byte("once\r\n")); err != nil || got != once {
		t.Fatalf("EnqueueOnce = %q, %v", got, err)
	}
	ids = append(ids, once)
	for _, id := range ids {
		cached, err := s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		cachedBody, err := s.Body(id)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := s.fresh.message(id); !ok {
			t.Fatalf("%s: not served from the cache", id)
		}
		stored, storedBody := readStored(t, s, id)
		if !reflect.DeepEqual(cached, stored) {
			t.Errorf("%s: cached %+v\nstored %+v", id, cached, stored)
		}
		if !bytes.Equal(cachedBody, storedBody) || (cachedBody == nil) != (storedBody == nil) {
			t.Errorf("%s: cached body %q, stored %q", id, cachedBody, storedBody)
		}
	}
}

// Any change to a message ends its cache entry: readers see the change,
// and a retired message is gone.
func TestFreshCacheNeverStale(t *testing.T) {
	clk := newClock(t0)
	s := openT(t, Options{Now: clk.Now})
	id := mustEnqueue(t, s, env1(), []Recipient{{To: "<a@b.test>"}, {To: "<c@d.test>"}}, []byte("x\r\n"))
	m, _ := s.Get(id)
	m.Recipients[0].Status = StatusFailed // a copy: the cache is not changed
	if m2, _ := s.Get(id); m2.Recipients[0].Status != StatusPending {
		t.Fatalf("changing Get's result changed the cache: %+v", m2.Recipients[0])
	}
	if _, err := s.Record(context.Background(), id, []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 ok"}}, nil); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Get(id); m.Recipients[0].Status != StatusDelivered || m.Recipients[1].Status != StatusPending {
		t.Fatalf("after Record: %+v", m.Recipients)
	}
	id2 := mustEnqueue(t, s, env1(), rcpt1("<a@b.test>"), []byte("y\r\n"))
	s.Get(id2)
	if _, err := s.Hold(id2); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Get(id2); !m.Held {
		t.Fatal("after Hold: Get says not held")
	}
	id3 := mustEnqueue(t, s, env1(), rcpt1("<a@b.test>"), []byte("z\r\n"))
	if _, err := s.Record(context.Background(), id3, []Result{{Rcpt: 0, Status: StatusDelivered, Reply: "250 ok"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(id3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a retired message: %v", err)
	}
	if _, err := s.Body(id3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Body of a retired message: %v", err)
	}
}

// A transaction that changes the message between its commit and its
// publication (the scheduler is fast) wins: nothing stale is published.
func TestFreshCacheDropBeforePublish(t *testing.T) {
	c := newFreshCache(1 << 20)
	c.reserve("A")
	c.drop("A")
	c.publish(&Message{ID: "A"}, inline([]byte("x")))
	if _, ok := c.message("A"); ok {
		t.Fatal("published after a drop")
	}
	if _, ok := c.body("A"); ok {
		t.Fatal("body published after a drop")
	}
}

// The cache stays within its byte bound, and its bookkeeping stays small
// when entries are dropped as fast as they come.
func TestFreshCacheBounded(t *testing.T) {
	c := newFreshCache(100 << 10)
	body := make([]byte, 1000)
	for i := range 10000 {
		id := fmt.Sprint(i)
		c.reserve(id)
		c.publish(&Message{ID: id}, inline(body))
		if c.bytes > c.max {
			t.Fatalf("after %d: %d bytes cached, bound %d", i, c.bytes, c.max)
		}
	}
	if _, ok := c.body("9999"); !ok {
		t.Fatal("newest entry evicted")
	}
	if _, ok := c.body("0"); ok {
		t.Fatal("oldest entry kept past the bound")
	}
	for i := range 100000 {
		id := fmt.Sprint("d", i)
		c.reserve(id)
		c.publish(&Message{ID: id}, inline(body))
		c.drop(id)
	}
	if n := len(c.order) - c.head; n > 2*len(c.m)+65 {
		t.Fatalf("%d IDs in order for %d entries", n, len(c.m))
	}
}
