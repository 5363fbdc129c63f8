package ratelimit

import (
	"context"
	"testing"
	"time"
)

func TestLocalSpacesPermits(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewLocal(func() time.Time { return now })
	r := Rate{N: 20, Per: time.Second}
	var waits []time.Duration
	for range 4 {
		w, err := l.Reserve(context.Background(), "hop", r)
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, w)
	}
	want := []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond, 150 * time.Millisecond}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("waits %v, want %v", waits, want)
		}
	}
	// Another key has its own rate.
	if w, _ := l.Reserve(context.Background(), "other", r); w != 0 {
		t.Errorf("other key waits %v", w)
	}
	// Idle time earns no burst.
	now = now.Add(10 * time.Second)
	w1, _ := l.Reserve(context.Background(), "hop", r)
	w2, _ := l.Reserve(context.Background(), "hop", r)
	if w1 != 0 || w2 != 50*time.Millisecond {
		t.Errorf("after idle: %v %v", w1, w2)
	}
}

func TestSlower(t *testing.T) {
	r := Rate{N: 100, Per: time.Second}
	if got := r.Slower(2); got != (Rate{25, time.Second}) {
		t.Errorf("Slower(2) = %v", got)
	}
	if got := (Rate{N: 1, Per: time.Second}).Slower(3); got != (Rate{1, 8 * time.Second}) {
		t.Errorf("1/s Slower(3) = %v", got)
	}
}
