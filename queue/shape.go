package queue

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/relay-mta/relay/queue/ratelimit"
)

// Shape is the traffic shaping of one next hop's lane.
type Shape struct {
	// Rate is the most messages per period to the hop; zero: the
	// Queue's MaxMessageRate (and if that is zero, no limit).
	Rate ratelimit.Rate
	// Concurrency is the most sessions at once; 0: PerHopConcurrency.
	Concurrency int
	// PerConnection is the most messages one session carries before it
	// is closed and another opened; 0: the Queue's
	// MaxMessagesPerConnection (and if that is 0, no limit).
	PerConnection int
}

// Adaptive shaping, after KumoMTA's traffic-shaping automation: a next
// hop that answers 421 or a 4.7.x status ("too many connections", "rate
// limited, try again later") is asked too much. Each such answer, at most
// one per throttleStepGap, takes the lane one level down (at most
// maxThrottle): half the sessions and half the rate of the level above.
// A hop without a configured rate is given one when first throttled: the
// rate it was getting (over its last sentRing messages), at least
// minThrottledRate; when it had too few messages to tell, only its
// sessions are cut. Each ThrottleRestore without another such answer
// takes one level back; at level 0 the configured rate (or none) is back.
const (
	maxThrottle     = 3
	throttleStepGap = time.Second
)

// minThrottledRate is the least base rate a throttled hop without a
// rate of its own is given.
var minThrottledRate = ratelimit.Rate{N: 1, Per: time.Second}

// sentRing is how many recent sends a lane remembers to measure its rate.
const sentRing = 32

// sent notes a message sent to the hop now.
func (l *lane) sent(now time.Time) {
	l.mu.Lock()
	l.sentAt[l.sentN%sentRing] = now
	l.sentN++
	l.mu.Unlock()
}

// observedLocked is the rate the hop got over its last sends, zero when
// too few to tell.
func (l *lane) observedLocked(now time.Time) ratelimit.Rate {
	n := min(l.sentN, sentRing)
	if n < sentRing/2 {
		return ratelimit.Rate{}
	}
	oldest := l.sentAt[(l.sentN-n)%sentRing]
	span := now.Sub(oldest)
	if span <= 0 {
		return ratelimit.Rate{}
	}
	// n messages over span, as a count per second rounded down; below
	// one a second, one per the span of one message.
	if perSec := float64(n) * float64(time.Second) / float64(span); perSec >= 1 {
		return ratelimit.Rate{N: int(perSec), Per: time.Second}
	}
	return ratelimit.Rate{N: 1, Per: span / time.Duration(n)}
}

// IsThrottleReply reports whether a reply asks the sender to slow down:
// 421 (RFC 5321 §3.8) or an enhanced status in class 4.7 (RFC 3463:
// security or policy status, which is where providers put their rate
// limits, e.g. "451 4.7.1 Try again later").
func IsThrottleReply(code int, text string) bool {
	if code == 421 {
		return true
	}
	if code/100 != 4 {
		return false
	}
	_, rest, _ := strings.Cut(text, " ")
	return strings.HasPrefix(rest, "4.7.")
}

// Throttled reports whether err stands for a reply that IsThrottleReply
// (a Deliverer's errors say so with a Throttled() bool method).
func Throttled(err error) bool {
	var t interface{ Throttled() bool }
	return errors.As(err, &t) && t.Throttled()
}

// NotSent reports whether err says that a session failed before the next
// hop could have accepted anything of the message (a Deliverer's errors
// say so with a NotSent() bool method): the message may then go again on
// a new session at once. That is what happens to a cached session the
// next hop closed while it was idle.
func NotSent(err error) bool {
	var t interface{ NotSent() bool }
	return errors.As(err, &t) && t.NotSent()
}

// shapeOf resolves h's shape against the Queue's defaults.
func (q *Queue) shapeOf(h Hop) Shape {
	s := h.Shape
	if s.Rate.IsZero() {
		s.Rate = q.o.MaxMessageRate
	}
	if s.Concurrency <= 0 {
		s.Concurrency = q.o.PerHopConcurrency
	}
	if s.PerConnection <= 0 {
		s.PerConnection = q.o.MaxMessagesPerConnection
	}
	return s
}

// levelLocked brings the throttle level up to date at now: one level
// back per ThrottleRestore since the last change. l.mu is held.
func (l *lane) levelLocked(now time.Time) int {
	restore := l.q.o.ThrottleRestore
	for l.level > 0 && now.Sub(l.levelChanged) >= restore {
		l.level--
		l.levelChanged = l.levelChanged.Add(restore)
	}
	return l.level
}

// limitLocked is the number of sessions the lane may have now.
func (l *lane) limitLocked(now time.Time) int {
	return max(1, l.shape.Concurrency>>l.levelLocked(now))
}

// rateLocked is the message rate the lane may send at now.
func (l *lane) rateLocked(now time.Time) ratelimit.Rate {
	lvl := l.levelLocked(now)
	if lvl == 0 {
		return l.shape.Rate
	}
	return l.baseRate.Slower(lvl)
}

// throttle records that the hop asked us to slow down.
func (l *lane) throttle(now time.Time, reply string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.throttles++
	lvl := l.levelLocked(now)
	if lvl > 0 && now.Sub(l.lastThrottle) < throttleStepGap {
		l.lastThrottle = now
		l.levelChanged = now // the restore clock starts again
		return
	}
	l.lastThrottle = now
	l.levelChanged = now
	if lvl == 0 {
		l.baseRate = l.shape.Rate
		if l.baseRate.IsZero() {
			// Without a rate of its own and without enough sends to
			// measure one, only the sessions are cut.
			l.baseRate = l.observedLocked(now)
			if !l.baseRate.IsZero() && l.baseRate.Interval() > minThrottledRate.Interval() {
				l.baseRate = minThrottledRate
			}
		}
	}
	if lvl < maxThrottle {
		l.level++
		l.q.log.Warn("queue: next hop asks to slow down", "hop", l.hop.Key, "level", l.level,
			"sessions", max(1, l.shape.Concurrency>>l.level), "rate", l.rateLocked(now).String(), "reply", reply)
	}
}

// pace waits until the lane's rate allows one more message. It returns
// false when ctx ended first.
func (l *lane) pace(ctx context.Context) bool {
	l.mu.Lock()
	r := l.rateLocked(l.q.o.Now())
	l.mu.Unlock()
	if r.IsZero() {
		return true
	}
	wait, err := l.q.limiter.Reserve(ctx, l.hop.Key, r)
	if err != nil {
		// A shared limiter that cannot be asked must not stop delivery;
		// a local spacing of one interval keeps the hop safe meanwhile.
		l.q.log.Warn("queue: rate limiter", "hop", l.hop.Key, "err", err)
		wait = r.Interval()
	}
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// HopState is the shaping state of one next hop, for `relay queue stats`
// and metrics.
type HopState struct {
	Key      string
	Sessions int // open or opening
	Queued   int // jobs waiting in the lane
	// Limit is the sessions allowed now, Concurrency those configured.
	Limit, Concurrency int
	// Rate is the message rate allowed now (zero: no limit), Configured
	// the one configured.
	Rate, Configured ratelimit.Rate
	// Level is how far the hop is throttled (0: not); Throttles counts
	// the replies that asked us to slow down since the lane was made.
	Level     int
	Throttles int
}

// Hops returns the state of every lane to a remote next hop, in no
// particular order.
func (q *Queue) Hops() []HopState {
	q.mu.Lock()
	lanes := make([]*lane, 0, len(q.lanes))
	for _, l := range q.lanes {
		if !l.hop.Local {
			lanes = append(lanes, l)
		}
	}
	q.mu.Unlock()
	now := q.o.Now()
	out := make([]HopState, 0, len(lanes))
	for _, l := range lanes {
		l.mu.Lock()
		out = append(out, HopState{
			Key: l.hop.Key, Sessions: l.workers, Queued: len(l.jobs),
			Limit: l.limitLocked(now), Concurrency: l.shape.Concurrency,
			Rate: l.rateLocked(now), Configured: l.shape.Rate,
			Level: l.level, Throttles: l.throttles,
		})
		l.mu.Unlock()
	}
	return out
}
