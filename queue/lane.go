package queue

import (
	"container/heap"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/relay-mta/relay/queue/ratelimit"
	"github.com/relay-mta/relay/spool"
)

// lane is the delivery line to one next hop: a bounded priority queue of
// jobs and up to PerHopConcurrency workers, each holding one session that
// carries message after message while there is work.
//
// Jobs leave the lane highest MT-PRIORITY first (RFC 6710), in arrival
// order within a priority. The queue holds at most laneCap jobs: when it
// is full, a job of higher priority than the lowest queued one takes that
// one's place, and the displaced job goes back to being merely due in the
// spool's schedule index (the scheduler picks it up again later). So a
// priority-9 message waits behind at most the jobs already being
// delivered, however many priority-0 messages are due, and memory stays
// bounded by the lane size.
type lane struct {
	q     *Queue
	hop   Hop
	ready chan struct{} // one token per queued job; workers wait on it

	shape Shape // resolved against the Queue's defaults

	mu        sync.Mutex
	jobs      jobHeap
	seq       uint64 // arrival counter: FIFO within a priority
	workers   int
	idle      int       // workers waiting for a job, each maybe holding a session
	deadUntil time.Time // after a failed connection: defer without dialling
	deadReply string
	wasDead   bool // marked down since its last delivery (expedite.go)

	// Adaptive shaping (shape.go).
	level        int       // throttle level, 0..maxThrottle
	levelChanged time.Time // when level last went up or one step down
	lastThrottle time.Time
	throttles    int
	baseRate     ratelimit.Rate // the rate the levels halve: configured, or observed
	sentAt       [sentRing]time.Time
	sentN        int
}

// laneCap is how many jobs a lane holds besides those being delivered.
func (q *Queue) laneCap() int { return 4 * q.o.PerHopConcurrency }

// jobHeap is a max-heap on (priority, -seq): the root is the job to
// deliver next.
type jobHeap []*job

func (h jobHeap) Len() int { return len(h) }
func (h jobHeap) Less(i, j int) bool {
	if h[i].prio != h[j].prio {
		return h[i].prio > h[j].prio
	}
	return h[i].seq < h[j].seq
}
func (h jobHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *jobHeap) Push(x any)   { *h = append(*h, x.(*job)) }
func (h *jobHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return j
}

// last returns the index of the job that would leave the heap last (the
// lowest priority, latest arrival); the heap is small, so a linear look
// at its leaves is cheap.
func (h jobHeap) last() int {
	worst := -1
	for i := len(h) / 2; i < len(h); i++ {
		if worst < 0 || h.Less(worst, i) {
			worst = i
		}
	}
	return worst
}

func (q *Queue) lane(h Hop) *lane {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.lanes[h.Key]
	if l == nil {
		l = &lane{q: q, hop: h, shape: q.shapeOf(h), ready: make(chan struct{}, q.laneCap())}
		q.lanes[h.Key] = l
	}
	return l
}

// pruneLanes forgets lanes with no work and no workers, so the lane map
// stays as small as the set of busy next hops. Only the scheduler
// goroutine pushes, and it calls this, so no push can race the removal.
func (q *Queue) pruneLanes() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k, l := range q.lanes {
		l.mu.Lock()
		now := q.o.Now()
		// A throttled lane is kept until it is restored: forgetting it
		// would forget that the hop asked us to slow down.
		idle := l.workers == 0 && len(l.jobs) == 0 && !l.deadUntil.After(now) && l.levelLocked(now) == 0
		l.mu.Unlock()
		if idle {
			delete(q.lanes, k)
		}
	}
}

// push queues j, starting a worker when the lane has fewer than allowed.
// It reports false when the lane is full of jobs of j's priority or
// higher. When j displaces a queued job of lower priority, that job is
// returned: the caller releases it, and its recipients stay due.
func (l *lane) push(ctx context.Context, j *job) (ok bool, displaced *job) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	j.seq = l.seq
	if len(l.jobs) >= l.q.laneCap() {
		w := l.jobs.last()
		if w < 0 || l.jobs[w].prio >= j.prio {
			return false, nil
		}
		displaced = l.jobs[w]
		l.jobs[w] = j // same count: no new token
		heap.Fix(&l.jobs, w)
	} else {
		heap.Push(&l.jobs, j)
		l.ready <- struct{}{} // never blocks: tokens ≤ jobs ≤ cap
	}
	// The connection cache: a worker waiting for work holds its session
	// open (work), so a new worker, and with it a new connection, is only
	// started when the idle ones cannot take every queued job.
	if l.workers < l.limitLocked(l.q.o.Now()) && len(l.jobs) > l.idle {
		l.workers++
		l.q.workers.Add(1)
		go l.work(ctx)
	}
	return true, displaced
}

// pop takes the job to deliver next, nil when there is none.
func (l *lane) pop() *job {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.jobs) == 0 {
		return nil
	}
	return heap.Pop(&l.jobs).(*job)
}

func (l *lane) work(ctx context.Context) {
	defer l.q.workers.Done()
	var c cached
	defer func() { c.close() }()
	idle := time.NewTimer(l.q.o.SessionIdle)
	defer idle.Stop()
	for {
		if ctx.Err() != nil {
			l.exit()
			return
		}
		l.setIdle(1)
		select {
		case <-l.ready:
			l.setIdle(-1)
			if j := l.pop(); j != nil {
				if !l.pace(ctx) {
					l.q.release(j)
					l.exit()
					return
				}
				c = l.deliver(ctx, c, j)
				if c.sess != nil && l.shape.PerConnection > 0 && c.sent >= l.shape.PerConnection {
					c.close() // max_messages_per_connection: the next job dials anew
				}
			}
			if l.exitIfOverLimit() {
				return
			}
			idle.Reset(l.q.o.SessionIdle)
		case <-idle.C:
			l.setIdle(-1)
			if l.exitIfEmpty() {
				return
			}
			idle.Reset(l.q.o.SessionIdle)
		case <-ctx.Done():
			l.setIdle(-1)
		}
	}
}

// cached is a worker's session and what it has carried: the connection
// cache is the set of sessions held by idle workers, kept SessionIdle
// after their lane empties and closed with QUIT.
type cached struct {
	sess Session
	sent int  // messages carried
	used bool // carried at least one transaction, so it may have gone stale
}

func (c *cached) close() {
	if c.sess != nil {
		c.sess.Close()
	}
	*c = cached{}
}

func (l *lane) setIdle(d int) {
	l.mu.Lock()
	l.idle += d
	l.mu.Unlock()
}

func (l *lane) exit() {
	l.mu.Lock()
	l.workers--
	l.mu.Unlock()
}

func (l *lane) exitIfEmpty() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.jobs) > 0 {
		return false
	}
	l.workers--
	return true
}

// exitIfOverLimit ends a worker when the lane has more than it may now
// (a throttled hop gets fewer sessions).
func (l *lane) exitIfOverLimit() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.workers <= l.limitLocked(l.q.o.Now()) {
		return false
	}
	l.workers--
	return true
}

// deliver performs one job on c's session (dialling one when there is
// none) and returns the session to keep using. Deliveries run to
// completion on their own timeouts even when the queue is stopping:
// cutting one off after the next hop took the message would only cause a
// duplicate.
func (l *lane) deliver(ctx context.Context, c cached, j *job) cached {
	q := l.q
	defer func() {
		q.release(j)
		q.Notify() // the lane has room again
	}()
	dctx := context.WithoutCancel(ctx)
	if l.hop.Local {
		l.record(j, l.localResults(j), nil)
		return cached{}
	}
	now := q.o.Now()
	if reply, dead := l.dead(now); dead {
		l.record(j, l.deferAll(j, reply, now), nil)
		return c
	}
	body, err := q.o.Spool.OpenBody(j.msg.ID)
	if err != nil {
		q.log.Error("queue: read body", "id", j.msg.ID, "err", err)
		return c
	}
	defer body.Close()
	// The DSN parameters travel with each recipient (RFC 3461 §4).
	rcpts := make([]string, len(j.outs))
	for i := range j.outs {
		rcpts[i] = j.outs[i] + j.parms[i]
	}
	var replies []Reply
	for {
		if c.sess == nil {
			sess, err := q.o.Deliverer.Dial(dctx, l.hop)
			if err != nil {
				l.dialFailed(j, err)
				return cached{}
			}
			c = cached{sess: sess}
		}
		reused := c.used
		l.sent(q.o.Now())
		replies, err = c.sess.Send(dctx, j.msg, rcpts, body)
		c.used, c.sent = true, c.sent+1
		if err != nil && reused && NotSent(err) {
			// The hop closed the cached session while it was idle
			// (RFC 5321 §4.5.3.2 lets it): nothing of this message went
			// through, so it goes again on a new session.
			q.log.Debug("queue: cached session gone, dialling anew", "hop", l.hop.Key, "err", err)
			c.close()
			continue
		}
		break
	}
	now = q.o.Now()
	if err != nil || len(replies) != len(j.rcpts) {
		if err == nil {
			err = fmt.Errorf("session returned %d replies for %d recipients", len(replies), len(j.rcpts))
		}
		if Throttled(err) {
			l.throttle(now, errorText(err))
		}
		remote := c.sess.Remote()
		c.close()
		results := l.deferAll(j, errorText(fmt.Errorf("%s: %w", remote, err)), now)
		l.record(j, results, nil)
		return c
	}
	results := make([]spool.Result, len(j.rcpts))
	var relayed map[int]bool
	throttled := ""
	for i, n := range j.rcpts {
		if replies[i].Relayed {
			if relayed == nil {
				relayed = map[int]bool{}
			}
			relayed[n] = true
		}
		text := replyText(replies[i])
		switch classify(replies[i].Code) {
		case delivered:
			results[i] = spool.Result{Rcpt: n, Status: spool.StatusDelivered, Reply: text}
		case failed:
			results[i] = spool.Result{Rcpt: n, Status: spool.StatusFailed, Reply: text}
		default:
			results[i] = q.deferResult(j.msg, n, text, now)
			if IsThrottleReply(replies[i].Code, text) {
				throttled = text
			}
		}
		results[i].Remote = c.sess.Remote()
	}
	if throttled != "" {
		l.throttle(now, throttled)
	}
	l.record(j, results, relayed)
	l.recovered()
	return c
}

// dialFailed defers (or fails) a job whose session could not be opened.
// A hop that refused or timed out is marked down for a while; one that
// answered but asked us to slow down is throttled instead, since it is
// up and will take mail at a lower pace.
func (l *lane) dialFailed(j *job, err error) {
	q := l.q
	now := q.o.Now()
	results := make([]spool.Result, len(j.rcpts))
	for i, n := range j.rcpts {
		results[i] = q.errorResult(j.msg, n, err, now)
	}
	switch {
	case Throttled(err):
		l.throttle(now, errorText(err))
	case !IsPermanent(err):
		l.markDead(now, errorText(err))
	}
	l.record(j, results, nil)
}

// record records the results of job j, naming this lane as their next
// hop (for the outbox notices of the outcomes).
func (l *lane) record(j *job, results []spool.Result, relayed map[int]bool) {
	for i := range results {
		results[i].NextHop = l.hop.Key
	}
	l.q.record(j.msg, results, relayed)
}

func (l *lane) deferAll(j *job, reply string, now time.Time) []spool.Result {
	results := make([]spool.Result, len(j.rcpts))
	for i, n := range j.rcpts {
		results[i] = l.q.deferResult(j.msg, n, reply, now)
	}
	return results
}

// A next hop that refused a connection is treated as down for a short
// while, as Postfix does with dead destinations: the rest of its queued
// work is deferred at once instead of each message waiting for its own
// connection timeout.
const deadHopWindow = 10 * time.Second

func (l *lane) markDead(now time.Time, reply string) {
	l.mu.Lock()
	l.deadUntil, l.deadReply = now.Add(min(deadHopWindow, max(l.q.o.Retry.Min, time.Second))), reply
	l.wasDead = true
	l.mu.Unlock()
}

func (l *lane) dead(now time.Time) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadReply, now.Before(l.deadUntil)
}

// localResults delivers into this relay's mailboxes: the spool writes each
// mailbox entry in the same transaction that retires the recipient, so a
// local delivery happens exactly once.
func (l *lane) localResults(j *job) []spool.Result {
	results := make([]spool.Result, len(j.rcpts))
	for i, n := range j.rcpts {
		hdr := "Return-Path: " + j.msg.From + "\r\nDelivered-To: " + strings.Trim(j.outs[i], "<>") + "\r\n"
		results[i] = spool.Result{
			Rcpt: n, Status: spool.StatusDelivered, Reply: "250 2.0.0 delivered to mailbox " + j.boxes[i],
			Mailbox: j.boxes[i], MailboxHeader: []byte(hdr), Remote: "local",
		}
	}
	return results
}
