package queue

import (
	"context"
	"errors"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/relay-mta/relay/queue/ratelimit"
	"github.com/relay-mta/relay/spool"
)

// Options configure a Queue.
type Options struct {
	Spool     *spool.Spool
	Router    Router
	Deliverer Deliverer
	Retry     RetryPolicy
	// PerHopConcurrency is the number of sessions at once per next hop.
	PerHopConcurrency int
	Logger            *slog.Logger     // nil: discard
	Now               func() time.Time // nil: time.Now
	// Rand returns numbers in [0,1) for jitter; nil: math/rand/v2.
	Rand func() float64
	// RestartJitter spreads recipients that were already overdue when the
	// queue started over this window, so a restart after an outage does
	// not hit every next hop at once. 0: min(Retry.Min, 30s).
	RestartJitter time.Duration
	// SessionIdle is how long an idle session to a next hop is kept open
	// for more messages (the connection cache). 0: 5s.
	SessionIdle time.Duration
	// MaxMessageRate, MaxMessagesPerConnection: the defaults of every
	// hop's Shape (zero: no limit).
	MaxMessageRate           ratelimit.Rate
	MaxMessagesPerConnection int
	// ThrottleRestore is how long a throttled hop must go without asking
	// us to slow down before one level of throttling is taken back. 0: 1m.
	ThrottleRestore time.Duration
	// Limiter spaces messages to hops with a rate; nil: a
	// ratelimit.Local on Now. A fleet shares one by key (the hop's Key).
	Limiter ratelimit.Limiter
	// OnResult, if set, is called after each recipient's outcome is
	// recorded (for metrics and tests).
	OnResult func(id string, rcpt int, status spool.Status, reply string)
	// OnOutcome, if set, is called like OnResult with the whole message
	// and result (for metrics by next hop and delivery latency).
	OnOutcome func(m *spool.Message, r spool.Result)

	// Hostname names this relay in DSNs (Reporting-MTA, From).
	Hostname string
	// DelayWarning is when the one delay DSN per recipient goes out; 0
	// means never.
	DelayWarning time.Duration
	// DSNMaxFull bounds the original returned whole with RET=FULL; 0:
	// DefaultDSNMaxFull.
	DSNMaxFull int
	// SignDSN, if set, signs each DSN before it is queued (DKIM).
	SignDSN func(msg []byte) ([]byte, error)
	// OnDSN, if set, is called for each DSN queued (for metrics).
	OnDSN func(id, dsnID string)
	// DSNRecipients, if set, gives the addresses a DSN to the reverse
	// path goes to, when that is an alias of several (nil: the reverse
	// path itself).
	DSNRecipients func(reversePath string) []string
}

// Queue schedules and performs deliveries. Create it with New and start it
// with Run.
type Queue struct {
	o       Options
	log     *slog.Logger
	limiter ratelimit.Limiter
	wake    chan struct{}

	mu       sync.Mutex
	inflight map[rcptRef]struct{}
	// claimed counts the claims on messages taken out of the queue's
	// hands (admin.go, Claim): none of their jobs is dispatched.
	claimed map[string]int
	lanes   map[string]*lane
	randMu  sync.Mutex
	workers sync.WaitGroup
	start   time.Time

	// floor is the due time of the earliest schedule entry not yet handed
	// to a lane (zero: unknown). Passes seek from it instead of from the
	// start of the index, because the start of the index is where retired
	// deliveries leave their deleted keys, which an iterator must step
	// over until compaction removes them. Spool.RaiseFloor guarantees
	// that no entry appears below it later.
	floor    time.Time
	lastFull time.Time // when a pass last scanned from the very start
}

type rcptRef struct {
	id string
	n  int
}

// job is one message's recipients for one next hop: one SMTP transaction.
type job struct {
	msg   *spool.Message
	rcpts []int    // recipient indexes
	outs  []string // forward paths to send, parallel to rcpts
	parms []string // their stored RCPT parameters (NOTIFY, ORCPT), wire form
	boxes []string // local mailboxes, parallel to rcpts (local hops only)
	hop   Hop
	prio  int8      // MT-PRIORITY of the message: the lane serves higher first
	seq   uint64    // arrival order in its lane
	due   time.Time // the earliest schedule entry of its recipients
}

// scanBatch is how many schedule entries one read of the index returns;
// passLimit bounds the entries one scheduling pass looks at, so a huge
// backlog for full lanes cannot turn a pass into a scan of the queue.
// fullScanEvery is a safety net: a pass from the very start now and then,
// whatever the floor says.
const (
	scanBatch     = 256
	passLimit     = 8192
	fullScanEvery = 30 * time.Second
	// minPassGap coalesces wake-ups: under load every enqueue and every
	// finished delivery asks for a pass, and a pass costs a seek that
	// steps over recently deleted keys. A few milliseconds of latency buy
	// far fewer passes.
	minPassGap = 5 * time.Millisecond
)

// New returns a Queue; nothing runs until Run.
func New(o Options) *Queue {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.PerHopConcurrency <= 0 {
		o.PerHopConcurrency = 8
	}
	if o.RestartJitter == 0 {
		o.RestartJitter = min(o.Retry.Min, 30*time.Second)
	}
	if o.SessionIdle == 0 {
		o.SessionIdle = 5 * time.Second
	}
	if o.ThrottleRestore <= 0 {
		o.ThrottleRestore = time.Minute
	}
	if o.Limiter == nil {
		o.Limiter = ratelimit.NewLocal(o.Now)
	}
	if o.DSNMaxFull == 0 {
		o.DSNMaxFull = DefaultDSNMaxFull
	}
	if o.Hostname == "" {
		o.Hostname = "localhost"
	}
	return &Queue{
		o:        o,
		limiter:  o.Limiter,
		log:      o.Logger,
		wake:     make(chan struct{}, 1),
		inflight: make(map[rcptRef]struct{}),
		claimed:  make(map[string]int),
		lanes:    make(map[string]*lane),
	}
}

// Notify wakes the scheduler: a message was enqueued, released or retried.
// It never blocks.
func (q *Queue) Notify() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Run schedules deliveries until ctx ends, then waits for the deliveries
// in progress to finish (each bounded by its own timeouts) and returns.
func (q *Queue) Run(ctx context.Context) error {
	q.start = q.o.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var lastPass time.Time
	for {
		if gap := time.Since(lastPass); gap < minPassGap {
			time.Sleep(minPassGap - gap)
		}
		lastPass = time.Now()
		next := q.pass(ctx)
		wait := time.Minute // a safety net; Notify and due times normally wake us
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(q.o.Now()), time.Millisecond))
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			q.workers.Wait()
			return nil
		case <-q.wake:
		case <-timer.C:
		}
	}
}

// pass dispatches due work and returns when the next known work is due
// (zero when nothing is scheduled).
func (q *Queue) pass(ctx context.Context) time.Time {
	now := q.o.Now()
	// From here on no entry due before now can appear: what this pass
	// does not see below now, it leaves held, and the floor stays there.
	q.o.Spool.RaiseFloor(now)
	var next time.Time
	note := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	var after *spool.Due // where the next read of the index starts
	q.mu.Lock()
	if wall := time.Now(); !q.floor.IsZero() && wall.Sub(q.lastFull) < fullScanEvery {
		after = &spool.Due{At: q.floor}
	} else {
		q.lastFull = wall
	}
	q.mu.Unlock()
	seek := after
	var held time.Time // the first entry this pass leaves due
	hold := func(t time.Time) {
		if held.IsZero() || t.Before(held) {
			held = t
		}
	}
	var from time.Time // where the indexes are read from: the floor
	if after != nil {
		from = after.At
	}
	// The classes above 0 (MT-PRIORITY 1 to 9) first, highest first: an
	// urgent message due with a backlog of ordinary ones is handed to
	// its lane before any of them, however long the backlog.
	if !q.passClasses(ctx, from, now, true, note, hold) {
		return next
	}
	seen, last := 0, time.Time{}
	for seen < passLimit {
		dues, err := q.o.Spool.DueAfter(after, now, scanBatch)
		if err != nil {
			q.log.Error("queue: read schedule", "err", err)
			q.floor = time.Time{}
			note(now.Add(time.Second))
			return next
		}
		if len(dues) == 0 {
			break
		}
		more := len(dues) == scanBatch
		if more {
			dues = wholeMessages(dues)
		}
		seen += len(dues)
		after = &dues[len(dues)-1]
		last = after.At
		if !q.dispatchDues(ctx, dues, now, note, hold) {
			return next
		}
		if !more {
			break
		}
	}
	// Then the classes below 0 (MT-PRIORITY -1 to -9).
	if !q.passClasses(ctx, from, now, false, note, hold) {
		return next
	}
	switch {
	case !held.IsZero():
		q.floor = held
	case seen >= passLimit:
		q.floor = last
		note(now) // more may be due: come back at once
	default:
		q.floor = now
	}
	// The earliest entry from the floor on, due or not, says when to wake.
	if first, err := q.o.Spool.DueAfter(seek, farFuture, 1); err == nil && len(first) > 0 && first[0].At.After(now) {
		note(first[0].At)
	}
	q.pruneLanes()
	return next
}

// passClasses dispatches the due entries of the priority classes above 0
// (above) or below it, read from from on. It reports false when ctx ended.
func (q *Queue) passClasses(ctx context.Context, from, now time.Time, above bool, note, hold func(time.Time)) bool {
	dues, next, err := q.o.Spool.DueClasses(from, now, passLimit, above)
	if err != nil {
		q.log.Error("queue: read schedule", "err", err)
		hold(from)
		note(now.Add(time.Second))
		return true
	}
	if !next.IsZero() {
		note(next)
	}
	if len(dues) == passLimit {
		// More than one pass takes: the rest stays due, and the floor
		// must not pass it.
		hold(from)
		note(now)
		dues = wholeMessages(dues)
	}
	if len(dues) == 0 {
		return true
	}
	return q.dispatchDues(ctx, dues, now, note, hold)
}

// dispatchDues hands the due entries of one read of an index to their
// lanes, a message's recipients together, in the order read. What it
// leaves due is held (the floor stays below it). It reports false when
// ctx ended.
func (q *Queue) dispatchDues(ctx context.Context, dues []spool.Due, now time.Time, note, hold func(time.Time)) bool {
	byMsg := map[string][]int{}
	firstDue := map[string]time.Time{}
	var order []string
	earliest := dues[0].At // of this read: a class read is not in due order across classes
	for _, d := range dues {
		if d.At.Before(earliest) {
			earliest = d.At
		}
		if eff := q.effectiveDue(d); eff.After(now) {
			note(eff)
			hold(d.At)
			continue
		}
		if q.isInflight(d.ID, d.Rcpt) {
			continue
		}
		if _, ok := byMsg[d.ID]; !ok {
			order = append(order, d.ID)
			firstDue[d.ID] = d.At
		}
		byMsg[d.ID] = append(byMsg[d.ID], d.Rcpt)
	}
	for _, id := range order {
		if ctx.Err() != nil {
			return false
		}
		left, displaced := q.dispatch(ctx, id, byMsg[id], firstDue[id], now)
		if left {
			hold(earliest) // conservative: anything in this read may be left
		}
		if !displaced.IsZero() {
			// A job handed out earlier (maybe in an earlier pass,
			// below where this one started) went back to due.
			hold(displaced)
		}
	}
	return true
}

// wholeMessages drops from a full read of the index the entries of its
// last message, which the next read may continue: that read then starts
// with all of them, so recipients due together go out as one job, and so
// in one transaction per next hop. A read that is one message only is
// kept whole.
func wholeMessages(dues []spool.Due) []spool.Due {
	last := dues[len(dues)-1].ID
	k := len(dues)
	for k > 0 && dues[k-1].ID == last {
		k--
	}
	if k == 0 {
		return dues
	}
	return dues[:k]
}

// farFuture bounds "the earliest entry, due or not" lookups.
var farFuture = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC) // UnixNano ends in 2262

// effectiveDue is the due time, except that work already overdue when the
// queue started is spread over RestartJitter by a hash of its identity.
func (q *Queue) effectiveDue(d spool.Due) time.Time {
	if !d.At.Before(q.start) || q.o.RestartJitter <= 0 {
		return d.At
	}
	h := fnv.New64a()
	h.Write([]byte(d.ID))
	h.Write([]byte{byte(d.Rcpt), byte(d.Rcpt >> 8)})
	return q.start.Add(time.Duration(h.Sum64() % uint64(q.o.RestartJitter)))
}

func (q *Queue) isInflight(id string, n int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.inflight[rcptRef{id, n}]
	return ok
}

// dispatch routes the due recipients of one message (the earliest due at
// due) and hands them to their lanes; recipients whose lane is full stay
// due for a later pass. It reports left when it left any of them due, and
// the earliest due time of queued jobs of lower priority that this
// message's jobs displaced from their lanes (zero: none).
func (q *Queue) dispatch(ctx context.Context, id string, rcpts []int, due, now time.Time) (left bool, displaced time.Time) {
	m, err := q.o.Spool.Get(id)
	if errors.Is(err, spool.ErrNotFound) {
		return false, time.Time{} // retired meanwhile
	}
	if err != nil {
		q.log.Error("queue: read message", "id", id, "err", err)
		return true, time.Time{}
	}
	prio := priorityOf(m)
	var immediate []spool.Result
	jobs := map[string]*job{}
	var keys []string
	for _, n := range rcpts {
		if n >= len(m.Recipients) {
			continue
		}
		r := m.Recipients[n]
		if r.Status == spool.StatusDelivered || r.Status == spool.StatusFailed {
			continue
		}
		if q.o.Retry.Lifetime > 0 && !now.Before(m.Received.Add(q.o.Retry.Lifetime)) {
			immediate = append(immediate, q.expired(m, n))
			continue
		}
		if res, missed := missedDeadline(m, n, now, r.LastReply); missed {
			immediate = append(immediate, res)
			continue
		}
		if r.Expanded {
			// An alias of several addresses, expanded at acceptance:
			// done, and reported "expanded" if NOTIFY asked for success.
			immediate = append(immediate, spool.Result{Rcpt: n, Status: spool.StatusDelivered,
				Reply: "250 2.1.5 alias expanded", Remote: RemoteExpanded, NextHop: RemoteExpanded})
			continue
		}
		hop, out, err := q.o.Router.Route(r.To)
		if err != nil {
			immediate = append(immediate, q.errorResult(m, n, err, now))
			continue
		}
		j := jobs[hop.Key]
		if j == nil {
			j = &job{msg: m, hop: hop, prio: prio, due: due}
			jobs[hop.Key] = j
			keys = append(keys, hop.Key)
		}
		j.rcpts = append(j.rcpts, n)
		j.outs = append(j.outs, out)
		j.parms = append(j.parms, r.Params)
		j.boxes = append(j.boxes, hop.Mailbox)
	}
	if len(immediate) > 0 {
		q.record(m, immediate, nil)
	}
	for _, k := range keys {
		j := jobs[k]
		l := q.lane(j.hop)
		q.mu.Lock()
		if q.claimed[id] > 0 {
			q.mu.Unlock()
			continue // being transferred (Claim); held meanwhile, so not due again
		}
		for _, n := range j.rcpts {
			q.inflight[rcptRef{id, n}] = struct{}{}
		}
		q.mu.Unlock()
		ok, out := l.push(ctx, j)
		if !ok {
			q.release(j)
			left = true
		}
		if out != nil {
			q.release(out)
			if displaced.IsZero() || out.due.Before(displaced) {
				displaced = out.due
			}
		}
	}
	return left, displaced
}

// resetFloor makes the next pass scan the index from its start.
func (q *Queue) resetFloor() {
	q.mu.Lock()
	q.lastFull = time.Time{}
	q.mu.Unlock()
}

func (q *Queue) release(j *job) {
	q.mu.Lock()
	for _, n := range j.rcpts {
		delete(q.inflight, rcptRef{j.msg.ID, n})
	}
	q.mu.Unlock()
}

// expired fails a recipient that outlived the queue lifetime, keeping the
// last reply it got.
func (q *Queue) expired(m *spool.Message, n int) spool.Result {
	reply := "554 5.4.7 Delivery time expired"
	if last := m.Recipients[n].LastReply; last != "" {
		reply += "; last reply: " + last
	}
	return spool.Result{Rcpt: n, Status: spool.StatusFailed, Reply: reply}
}

// errorResult turns an error standing for a reply into a result.
func (q *Queue) errorResult(m *spool.Message, n int, err error, now time.Time) spool.Result {
	text := errorText(err)
	if IsPermanent(err) {
		return spool.Result{Rcpt: n, Status: spool.StatusFailed, Reply: text}
	}
	return q.deferResult(m, n, text, now)
}

// deferResult schedules the next attempt of a recipient, or fails it when
// that attempt would come after its lifetime.
func (q *Queue) deferResult(m *spool.Message, n int, reply string, now time.Time) spool.Result {
	attempts := m.Recipients[n].Attempts + 1
	q.randMu.Lock()
	r := q.o.Rand()
	q.randMu.Unlock()
	next := now.Add(jitter(q.o.Retry.Delay(attempts), r))
	if q.o.Retry.Lifetime > 0 {
		expiry := m.Received.Add(q.o.Retry.Lifetime)
		if !now.Before(expiry) {
			res := q.expired(m, n)
			res.Reply = "554 5.4.7 Delivery time expired; last reply: " + reply
			return res
		}
		if next.After(expiry) {
			next = expiry // one last attempt at the end of the lifetime
		}
	}
	if res, missed := missedDeadline(m, n, now, reply); missed {
		return res
	}
	next = byNext(m, now, next)
	return spool.Result{Rcpt: n, Status: spool.StatusDeferred, Reply: reply, NextAttempt: next}
}

// record stores results, together with the DSN they owe (in the same
// spool transaction), then reports them. relayed marks recipients taken by
// a next hop that does not speak DSN.
func (q *Queue) record(m *spool.Message, results []spool.Result, relayed map[int]bool) {
	dsn := q.dsnFor(m, results, relayed, q.o.Now())
	var dsnID string
	for attempt := 0; ; attempt++ {
		var err error
		dsnID, err = q.o.Spool.Record(context.Background(), m.ID, results, dsn)
		if err == nil {
			break
		}
		if errors.Is(err, spool.ErrNotFound) || errors.Is(err, spool.ErrClosed) || attempt == 5 {
			q.log.Error("queue: record results", "id", m.ID, "err", err)
			q.resetFloor() // the recipients' old entries are still due
			return
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	for _, r := range results {
		args := []any{"id", m.ID, "to", m.Recipients[r.Rcpt].To, "status", string(r.Status), "reply", r.Reply}
		if r.Remote != "" {
			args = append(args, "relay", r.Remote)
		}
		if r.Status == spool.StatusDeferred {
			args = append(args, "next_attempt", r.NextAttempt.Format(time.RFC3339))
		}
		args = append(args, "delay", q.o.Now().Sub(m.Received).Round(time.Millisecond).String())
		q.log.Info("delivery", args...)
		if q.o.OnResult != nil {
			q.o.OnResult(m.ID, r.Rcpt, r.Status, r.Reply)
		}
		if q.o.OnOutcome != nil {
			q.o.OnOutcome(m, r)
		}
	}
	if dsnID != "" {
		q.log.Info("dsn queued", "id", m.ID, "dsn_id", dsnID, "to", m.From)
		if q.o.OnDSN != nil {
			q.o.OnDSN(m.ID, dsnID)
		}
		q.Notify()
	}
}
