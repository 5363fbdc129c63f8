package queue

import (
	"testing"
	"time"

	"github.com/relay-mta/relay/queue/ratelimit"
)

// TestThrottleLevels: replies asking to slow down halve a hop's sessions
// and rate, one level per second at most, and each ThrottleRestore
// without another takes one level back.
func TestThrottleLevels(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	q := New(Options{PerHopConcurrency: 8, ThrottleRestore: time.Minute, Now: func() time.Time { return now }})
	l := q.lane(Hop{Key: "smtp:x", Shape: Shape{Rate: ratelimit.Rate{N: 100, Per: time.Second}}})
	state := func() (int, ratelimit.Rate) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.limitLocked(now), l.rateLocked(now)
	}
	check := func(what string, limit int, rate ratelimit.Rate) {
		t.Helper()
		if gl, gr := state(); gl != limit || gr != rate {
			t.Errorf("%s: %d sessions at %v, want %d at %v", what, gl, gr, limit, rate)
		}
	}
	check("at first", 8, ratelimit.Rate{N: 100, Per: time.Second})
	l.throttle(now, "421 4.7.0 slow down")
	check("after a 421", 4, ratelimit.Rate{N: 50, Per: time.Second})
	now = now.Add(500 * time.Millisecond)
	l.throttle(now, "451 4.7.1 rate limited")
	check("a second 421 within a second", 4, ratelimit.Rate{N: 50, Per: time.Second})
	now = now.Add(2 * time.Second)
	l.throttle(now, "421 4.7.0 slow down")
	check("a 421 two seconds later", 2, ratelimit.Rate{N: 25, Per: time.Second})
	now = now.Add(time.Minute)
	check("a quiet minute later", 4, ratelimit.Rate{N: 50, Per: time.Second})
	now = now.Add(time.Minute)
	check("two quiet minutes later", 8, ratelimit.Rate{N: 100, Per: time.Second})
	if hs := q.Hops(); len(hs) != 1 || hs[0].Throttles != 3 || hs[0].Level != 0 {
		t.Errorf("Hops() = %+v", hs)
	}
}

func TestIsThrottleReply(t *testing.T) {
	for _, c := range []struct {
		code int
		text string
		want bool
	}{
		{421, "421 4.3.2 Service shutting down", true},
		{451, "451 4.7.1 Please try again later", true},
		{450, "450 4.7.0 Rate limit exceeded", true},
		{451, "451 4.4.1 deliver: dial: connection refused", false},
		{452, "452 4.5.3 Too many recipients", false},
		{550, "550 5.7.1 Relaying denied", false},
	} {
		if got := IsThrottleReply(c.code, c.text); got != c.want {
			t.Errorf("IsThrottleReply(%d, %q) = %v", c.code, c.text, got)
		}
	}
}
