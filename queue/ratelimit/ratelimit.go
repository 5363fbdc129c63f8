// Package ratelimit spaces events (messages to a next hop) to a rate. The
// Limiter interface is what the queue uses; Local keeps its state in
// memory for one relay. A fleet shares its limits through redislimit,
// which runs the same algorithm (GCRA, below: one timestamp per key) as
// one atomic script in Redis.
package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Rate is N events per Per; the zero Rate means no limit.
type Rate struct {
	N   int
	Per time.Duration
}

// IsZero reports whether r sets no limit.
func (r Rate) IsZero() bool { return r.N <= 0 || r.Per <= 0 }

// Interval is the time between two events at rate r.
func (r Rate) Interval() time.Duration {
	if r.IsZero() {
		return 0
	}
	return r.Per / time.Duration(r.N)
}

// Slower returns r divided by 2^steps, at least one event per Per·2^steps.
func (r Rate) Slower(steps int) Rate {
	if r.IsZero() || steps <= 0 {
		return r
	}
	n, per := r.N, r.Per
	for range steps {
		if n > 1 {
			n /= 2
		} else {
			per *= 2
		}
	}
	return Rate{N: n, Per: per}
}

func (r Rate) String() string {
	if r.IsZero() {
		return "unlimited"
	}
	switch r.Per {
	case time.Second:
		return fmt.Sprintf("%d/s", r.N)
	case time.Minute:
		return fmt.Sprintf("%d/m", r.N)
	case time.Hour:
		return fmt.Sprintf("%d/h", r.N)
	}
	return fmt.Sprintf("%d/%v", r.N, r.Per)
}

// Limiter hands out permits at a rate per key.
type Limiter interface {
	// Reserve takes one permit for key at rate r and returns how long
	// the caller must wait before using it (0: at once). Callers of one
	// key share its rate, whatever rate each passes: the latest rate
	// spaces the next permit. An error means the limiter could not be
	// asked (a shared store that is down); the caller decides whether to
	// go on unlimited or wait.
	Reserve(ctx context.Context, key string, r Rate) (time.Duration, error)
}

// Local is a Limiter in this process's memory. The zero value is not
// usable; make one with NewLocal.
//
// It implements the generic cell rate algorithm: per key, the theoretical
// arrival time (TAT) of the next permit. A permit is due at max(TAT, now)
// and moves TAT one interval past that, so permits are spaced exactly one
// interval apart with no burst, and idle time earns no credit. That is
// what a next hop that counts messages per second expects.
type Local struct {
	now func() time.Time

	mu  sync.Mutex
	tat map[string]time.Time
}

// NewLocal returns a Local on the clock now (nil: time.Now).
func NewLocal(now func() time.Time) *Local {
	if now == nil {
		now = time.Now
	}
	return &Local{now: now, tat: map[string]time.Time{}}
}

// sweepAt is the number of keys above which Reserve forgets keys whose
// next permit is already due, so memory follows the busy keys.
const sweepAt = 1024

// Reserve implements Limiter.
func (l *Local) Reserve(_ context.Context, key string, r Rate) (time.Duration, error) {
	if r.IsZero() {
		return 0, nil
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	at := l.tat[key]
	if at.Before(now) {
		at = now
	}
	if len(l.tat) >= sweepAt {
		for k, t := range l.tat {
			if t.Before(now) {
				delete(l.tat, k)
			}
		}
	}
	l.tat[key] = at.Add(r.Interval())
	return at.Sub(now), nil
}
