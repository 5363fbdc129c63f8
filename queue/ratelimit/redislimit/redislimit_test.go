package redislimit

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/relay-mta/relay/internal/redistest"
	"github.com/relay-mta/relay/queue/ratelimit"
)

// syncBuffer is a log sink several goroutines may write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newLimiter(t *testing.T, addr, prefix string, log *syncBuffer) *Limiter {
	t.Helper()
	o := Options{Addr: addr, Prefix: prefix, RetryAfter: 100 * time.Millisecond}
	if log != nil {
		o.Logger = slog.New(slog.NewTextHandler(log, nil))
	}
	l := New(o)
	t.Cleanup(func() { l.Close() })
	return l
}

// permit is when a permit is due, as far as the caller can tell: the
// limiter computed its wait at some moment between the call and its
// return, so the permit is due between the call plus the wait (lo) and
// the return plus the wait (hi). Redis's clock is this machine's.
type permit struct{ lo, hi time.Time }

// permits takes n permits for key from each limiter in turn.
func permits(t *testing.T, key string, r ratelimit.Rate, n int, ls ...*Limiter) []permit {
	t.Helper()
	var out []permit
	for range n {
		for _, l := range ls {
			before := time.Now()
			w, err := l.Reserve(context.Background(), key, r)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, permit{before.Add(w), time.Now().Add(w)})
		}
	}
	return out
}

// checkSpaced fails the test unless the permits, taken in this order,
// can have been due exactly gap apart.
func checkSpaced(t *testing.T, what string, ps []permit, gap time.Duration) {
	t.Helper()
	const slack = time.Millisecond // TIME's microseconds, Go's nanoseconds
	for i := 1; i < len(ps); i++ {
		if most := ps[i].hi.Sub(ps[i-1].lo); most < gap-slack {
			t.Errorf("%s: permits %d and %d are at most %v apart, want %v", what, i-1, i, most, gap)
		}
		if least := ps[i].lo.Sub(ps[i-1].hi); least > gap+slack {
			t.Errorf("%s: permits %d and %d are at least %v apart, want %v", what, i-1, i, least, gap)
		}
	}
}

// TestSharedRate: two limiters (two relays) on one Redis draw on one
// rate per key: 20 permits at 20/s span a second between them, as one
// limiter's would, instead of half a second each.
func TestSharedRate(t *testing.T) {
	srv := redistest.Start(t, "127.0.31.1")
	a := newLimiter(t, srv.Addr, "fleet1:", nil)
	b := newLimiter(t, srv.Addr, "fleet1:", nil)
	r := ratelimit.Rate{N: 20, Per: time.Second}
	checkSpaced(t, "two limiters at 20/s", permits(t, "smtp:mx.example:25", r, 10, a, b), 50*time.Millisecond)
	// Another key, and the same key under another fleet's prefix, have
	// rates of their own.
	for _, c := range []struct {
		l   *Limiter
		key string
	}{{a, "smtp:other:25"}, {newLimiter(t, srv.Addr, "fleet2:", nil), "smtp:mx.example:25"}} {
		if w, err := c.l.Reserve(context.Background(), c.key, r); err != nil || w != 0 {
			t.Errorf("%s%s: first permit waits %v, %v; want 0", c.l.prefix, c.key, w, err)
		}
	}
	// The key lives until its next permit is due, no longer.
	c, err := redis.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ms, err := redis.Int64(c.Do("PTTL", "fleet1:rate:smtp:mx.example:25"))
	if err != nil || ms <= 0 || ms > 1100 {
		t.Errorf("key's TTL %dms, %v; want up to the last permit's due time", ms, err)
	}
	if !a.Up() || a.Fallbacks() != 0 {
		t.Errorf("Up %v, Fallbacks %d with Redis running", a.Up(), a.Fallbacks())
	}
}

// TestRedisDown: with Redis gone, Reserve neither fails nor blocks, and
// permits are spaced at the rate by the local limiter; the outage is
// logged once, and when Redis is back the rate is shared again.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t, "127.0.31.1")
	var log syncBuffer
	l := newLimiter(t, srv.Addr, "t:", &log)
	r := ratelimit.Rate{N: 20, Per: time.Second}
	ctx := context.Background()
	if _, err := l.Reserve(ctx, "hop", r); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	time.Sleep(60 * time.Millisecond) // the permit above is in the past

	start := time.Now()
	down := permits(t, "hop", r, 20, l)
	if took := time.Since(start); took > time.Second {
		t.Errorf("20 reservations with Redis down took %v", took)
	}
	checkSpaced(t, "Redis down, 20/s", down, 50*time.Millisecond)
	if l.Up() || l.Fallbacks() != 20 {
		t.Errorf("Up %v, Fallbacks %d after 20 permits with Redis down; want false, 20", l.Up(), l.Fallbacks())
	}
	time.Sleep(150 * time.Millisecond) // past RetryAfter: asked again, still down
	permits(t, "hop", r, 5, l)
	if n := strings.Count(log.String(), "redis unavailable"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, log.String())
	}

	srv.Restart()
	time.Sleep(150 * time.Millisecond)
	if _, err := l.Reserve(ctx, "hop", r); err != nil {
		t.Fatal(err)
	}
	if !l.Up() || !strings.Contains(log.String(), "redis is back") {
		t.Errorf("Up %v after Redis came back; log:\n%s", l.Up(), log.String())
	}
	// Shared again: a second limiter waits behind the first's permit.
	other := newLimiter(t, srv.Addr, "t:", nil)
	checkSpaced(t, "Redis back, 20/s", permits(t, "hop2", r, 3, other, l), 50*time.Millisecond)
}
