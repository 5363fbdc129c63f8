// Package redislimit is a ratelimit.Limiter whose state lives in Redis,
// so that every relay of a fleet draws on one rate per next hop: ten
// relays sending to a provider that allows 30 messages a second send 30
// between them, not 300.
//
// It runs the same algorithm as ratelimit.Local (GCRA: one theoretical
// arrival time per key) as one Lua script, which Redis runs atomically,
// on Redis's clock, so that relays whose clocks disagree still agree on
// the spacing. Each key expires once its next permit is due: a key idle
// that long holds nothing an absent key would not.
//
// Redis being unreachable never stops delivery: every permit is also
// taken from a local limiter, which alone decides while Redis cannot be
// asked, so a relay then sends at most the configured rate on its own.
package redislimit

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/relay-mta/relay/queue/ratelimit"
)

// gcra takes one permit for KEYS[1] at ARGV[1] microseconds apart and
// returns the microseconds until it is due. TIME is Redis's clock; the
// key (a TAT in microseconds since the epoch, well within a double's
// exact integers) expires when that TAT has passed.
// replicate_commands lets Redis 3.2 to 4 replicate a script that reads
// TIME before it writes; later versions do so always.
var gcra = redis.NewScript(1, `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local nxt = tat + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000))
return tat - now
`)

// Options configure New.
type Options struct {
	// Addr is Redis's "host:port".
	Addr string
	// Password, if set, is sent with AUTH; DB selects a database.
	Password string
	DB       int
	// Prefix starts every key, so that fleets (or other users) sharing
	// one Redis keep apart; a hop's key is Prefix + "rate:" + hop.
	Prefix string
	// Local takes every permit as well, and alone while Redis is down;
	// nil: ratelimit.NewLocal(nil).
	Local ratelimit.Limiter
	// RetryAfter is how long Redis is left alone after it failed, every
	// permit meanwhile coming from Local; 0: one second.
	RetryAfter time.Duration
	// Timeout bounds one call to Redis (and dialing it); 0: 500ms.
	Timeout time.Duration
	Logger  *slog.Logger // nil: slog.Default()
	Now     func() time.Time
}

// Limiter is a ratelimit.Limiter shared through Redis. Its Reserve
// never fails: see the package comment.
type Limiter struct {
	pool   *redis.Pool
	addr   string
	local  ratelimit.Limiter
	prefix string
	retry  time.Duration
	log    *slog.Logger
	now    func() time.Time

	fallbacks atomic.Uint64

	mu      sync.Mutex
	down    bool      // the last call to Redis failed
	nextTry time.Time // while down: when Redis is asked again
	probing bool      // while down: a call to Redis is under way
}

// New returns a Limiter on the Redis at o.Addr. It does not connect: the
// first Reserve does, and finding Redis down then is not an error.
func New(o Options) *Limiter {
	if o.Local == nil {
		o.Local = ratelimit.NewLocal(o.Now)
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 500 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	dial := []redis.DialOption{
		redis.DialConnectTimeout(o.Timeout), redis.DialReadTimeout(o.Timeout), redis.DialWriteTimeout(o.Timeout),
		redis.DialPassword(o.Password), redis.DialDatabase(o.DB),
	}
	return &Limiter{
		pool: &redis.Pool{
			DialContext: func(ctx context.Context) (redis.Conn, error) {
				return redis.DialContext(ctx, "tcp", o.Addr, dial...)
			},
			// A connection idle for a while may be to a Redis that has
			// restarted since: PING it rather than lose a permit to it.
			TestOnBorrow: func(c redis.Conn, idle time.Time) error {
				if time.Since(idle) < time.Second {
					return nil
				}
				_, err := c.Do("PING")
				return err
			},
			MaxIdle:     16,
			IdleTimeout: time.Minute,
		},
		addr: o.Addr, local: o.Local, prefix: o.Prefix, retry: o.RetryAfter, log: o.Logger, now: o.Now,
	}
}

// Reserve implements ratelimit.Limiter. The wait is the later of the
// shared permit and the local one (the local one matters only for the
// relay alone in its fleet, and keeps a switch to Local from bursting).
func (l *Limiter) Reserve(ctx context.Context, key string, r ratelimit.Rate) (time.Duration, error) {
	if r.IsZero() {
		return 0, nil
	}
	local, err := l.local.Reserve(ctx, key, r)
	if err != nil {
		return 0, err
	}
	if !l.ask() {
		l.fallbacks.Add(1)
		return local, nil
	}
	us := max(r.Interval().Microseconds(), 1)
	shared, err := l.reserve(ctx, l.prefix+"rate:"+key, us)
	if err != nil {
		if ctx.Err() != nil {
			// Our caller gave up, which says nothing of Redis.
			l.mu.Lock()
			l.probing = false
			l.mu.Unlock()
			return local, nil
		}
		l.answered(err)
		l.fallbacks.Add(1)
		return local, nil
	}
	l.answered(nil)
	return max(local, time.Duration(shared)*time.Microsecond), nil
}

// reserve runs the script on a pooled connection.
func (l *Limiter) reserve(ctx context.Context, key string, us int64) (int64, error) {
	c, err := l.pool.GetContext(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return redis.Int64(gcra.DoContext(ctx, c, key, us))
}

// ask reports whether this Reserve should ask Redis: always while it is
// up; while it is down, one caller once per RetryAfter.
func (l *Limiter) ask() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.down {
		return true
	}
	if l.probing || l.now().Before(l.nextTry) {
		return false
	}
	l.probing = true
	return true
}

// answered records how a call to Redis went, logging each change of
// state once.
func (l *Limiter) answered(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.probing = false
	switch {
	case err != nil:
		if !l.down {
			l.log.Warn("ratelimit: redis unavailable; rate limits are per relay until it is back", "addr", l.addr, "err", err)
		}
		l.down = true
		l.nextTry = l.now().Add(l.retry)
	case l.down:
		l.down = false
		l.log.Info("ratelimit: redis is back; rate limits are shared again", "addr", l.addr)
	}
}

// Up reports whether the last call to Redis succeeded (true before the
// first).
func (l *Limiter) Up() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.down
}

// Fallbacks counts the permits taken from the local limiter alone
// because Redis could not be asked.
func (l *Limiter) Fallbacks() uint64 { return l.fallbacks.Load() }

// Close closes the connections to Redis.
func (l *Limiter) Close() error { return l.pool.Close() }
