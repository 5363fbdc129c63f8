// Package webhook posts the relay's delivery events to HTTP receivers
// ([[webhook]] in the configuration): one JSON POST per event, read from
// the spool's outbox, where each event was written in the same
// transaction as the outcome it reports. An event is deleted from the
// outbox only after the receiver answered 2xx, so it is posted at least
// once whatever fails (the receiver, the network, the relay itself); the
// "id" of each event, also sent as the Idempotency-Key header, lets a
// receiver drop repeats.
//
// A Poster posts the events of one webhook, a few at a time, in outbox
// order. A post that fails (no connection, a timeout, a 5xx, 401, 403,
// 404, 408, 425 or 429) leaves its event in the outbox and makes the
// whole webhook wait, from RetryMin doubling up to RetryMax, since a
// receiver that fails one post is usually down; any other 4xx is the
// receiver's final refusal of that one event, which is logged and
// dropped, so that one event it cannot take does not hold up the rest.
// An event older than Lifetime is dropped too.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/spool"
)

// Hook is one webhook: where its events go and how.
type Hook struct {
	Name     string        // its outbox subscriber name
	URL      string        // http or https
	Secret   []byte        // HMAC-SHA256 key for X-Relay-Signature; nil: unsigned
	Timeout  time.Duration // per post; 0: 10s
	RetryMin time.Duration // first wait after a failed post; 0: 1s
	RetryMax time.Duration // longest wait; 0: 5m
	// Lifetime drops events older than this; 0 keeps them until posted.
	Lifetime time.Duration
	// Concurrency is the number of posts in flight; 0: 4.
	Concurrency int
}

// Source is the outbox a Poster reads: *spool.Spool.
type Source interface {
	Notices(name string, after uint64, limit int) ([]spool.Notice, error)
	AckNotices(name string, seqs []uint64) error
	NoticeWatermark() uint64
	NoticeSignal(name string) <-chan struct{}
}

// Results of one event's post, for OnResult.
const (
	ResultPosted  = "posted"  // 2xx: done
	ResultRetry   = "retry"   // failed, kept for a later post
	ResultRefused = "refused" // a 4xx the receiver means for good: dropped
	ResultExpired = "expired" // older than Lifetime: dropped
)

// Poster posts one webhook's events until its Run returns.
type Poster struct {
	hook     Hook
	src      Source
	hostname string
	client   *http.Client
	log      *slog.Logger
	now      func() time.Time
	// onResult, if set, is told each event's result (metrics).
	onResult func(result string)

	mu     sync.Mutex
	status Status
}

// Options are the parts of a Poster besides its Hook.
type Options struct {
	Source   Source
	Hostname string // names the relay in events and idempotency keys
	Logger   *slog.Logger
	Now      func() time.Time // nil: time.Now
	// Transport makes the posts; nil: a default transport.
	Transport http.RoundTripper
	// OnResult, if set, is called with each event's result.
	OnResult func(result string)
}

// Status is what a Poster reports to operators.
type Status struct {
	Name, URL string
	// Failures counts failed rounds since the last success; LastError is
	// the last failure, NextAttempt when the next round starts while the
	// webhook waits (zero otherwise).
	Failures    int
	LastError   string
	LastErrorAt time.Time
	NextAttempt time.Time
	Posted      uint64 // events posted since start
}

// New returns a Poster for h.
func New(h Hook, o Options) *Poster {
	if h.Timeout <= 0 {
		h.Timeout = 10 * time.Second
	}
	if h.RetryMin <= 0 {
		h.RetryMin = time.Second
	}
	if h.RetryMax < h.RetryMin {
		h.RetryMax = max(h.RetryMin, 5*time.Minute)
	}
	if h.Concurrency <= 0 {
		h.Concurrency = 4
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	tr := o.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = h.Concurrency
		tr = t
	}
	return &Poster{
		hook: h, src: o.Source, hostname: o.Hostname, log: o.Logger.With("webhook", h.Name), now: o.Now, onResult: o.OnResult,
		client: &http.Client{
			Transport: tr,
			Timeout:   h.Timeout,
			// A redirect is a misconfigured URL: report it, do not follow
			// it (a POST would become a GET).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		status: Status{Name: h.Name, URL: h.URL},
	}
}

// Status returns the Poster's state.
func (p *Poster) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// batchSize is how many events one read of the outbox returns.
const batchSize = 64

// idleCheck is how often an idle Poster looks at the outbox without a
// signal: a safety net, since the spool signals each commit with events.
const idleCheck = 5 * time.Second

// Run posts events until ctx ends. Events in flight when it ends stay in
// the outbox, to be posted again.
func (p *Poster) Run(ctx context.Context) {
	signal := p.src.NoticeSignal(p.hook.Name)
	var cursor uint64 // every event up to it was posted or dropped
	idle := time.NewTimer(idleCheck)
	defer idle.Stop()
	for ctx.Err() == nil {
		w := p.src.NoticeWatermark()
		batch, err := p.src.Notices(p.hook.Name, cursor, batchSize)
		if err != nil {
			p.failed(fmt.Errorf("read outbox: %w", err))
			p.wait(ctx, nil)
			continue
		}
		if len(batch) == 0 {
			cursor = max(cursor, w-1)
			idle.Reset(idleCheck)
			select {
			case <-ctx.Done():
			case <-signal:
			case <-idle.C:
			}
			continue
		}
		failed, done := p.post(ctx, batch)
		if err := p.src.AckNotices(p.hook.Name, done); err != nil {
			// The cursor stays: they will be posted again.
			p.failed(fmt.Errorf("acknowledge events: %w", err))
			p.wait(ctx, signal)
			continue
		}
		// Everything before the first failure is done; without a failure,
		// the whole batch, and up to the watermark if the outbox had no
		// more (a notice below it committed before the read).
		next := batch[len(batch)-1].Seq
		if len(batch) < batchSize {
			next = max(next, w-1)
		}
		next = min(next, w-1)
		if failed != nil {
			next = min(next, failed.Seq-1)
		}
		cursor = max(cursor, next)
		if failed != nil {
			p.wait(ctx, signal)
		} else {
			p.succeeded()
		}
	}
}

// post posts batch in order, Concurrency events at a time, and stops at
// the first window with a failure. It returns the first event that must
// be posted again (nil: none) and the seqs of the events done with.
func (p *Poster) post(ctx context.Context, batch []spool.Notice) (failed *spool.Notice, done []uint64) {
	for start := 0; start < len(batch); start += p.hook.Concurrency {
		window := batch[start:min(start+p.hook.Concurrency, len(batch))]
		results := make([]string, len(window))
		errs := make([]error, len(window))
		var wg sync.WaitGroup
		for i := range window {
			wg.Go(func() { results[i], errs[i] = p.postOne(ctx, &window[i]) })
		}
		wg.Wait()
		for i, r := range results {
			if p.onResult != nil {
				p.onResult(r)
			}
			switch r {
			case ResultRetry:
				if failed == nil {
					failed = &window[i]
					p.failed(errs[i])
				}
			default:
				done = append(done, window[i].Seq)
			}
		}
		if failed != nil {
			return failed, done
		}
	}
	return nil, done
}

// postOne posts one event and classifies the answer.
func (p *Poster) postOne(ctx context.Context, n *spool.Notice) (string, error) {
	if p.hook.Lifetime > 0 && p.now().Sub(n.At) > p.hook.Lifetime {
		p.log.Warn("webhook: event dropped: older than the lifetime", "id", n.ID, "event", n.Kind, "at", n.At, "lifetime", p.hook.Lifetime)
		return ResultExpired, nil
	}
	ev := NewEvent(p.hostname, n)
	body, err := json.Marshal(ev)
	if err != nil {
		return ResultRefused, err // cannot happen with these types
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.hook.URL, bytes.NewReader(body))
	if err != nil {
		return ResultRetry, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "relay/"+p.hostname)
	req.Header.Set("Idempotency-Key", ev.ID)
	req.Header.Set("X-Relay-Event", ev.Event)
	if p.hook.Secret != nil {
		req.Header.Set(SignatureHeader, Sign(p.hook.Secret, p.now(), body))
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return ResultRetry, err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection is reused
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		p.mu.Lock()
		p.status.Posted++
		p.mu.Unlock()
		return ResultPosted, nil
	case code >= 400 && code < 500 && !temporary4xx(code):
		p.log.Warn("webhook: event refused by the receiver, dropped", "id", n.ID, "event", n.Kind, "key", ev.ID,
			"status", resp.Status, "answer", oneLine(snippet))
		return ResultRefused, nil
	}
	return ResultRetry, fmt.Errorf("%s answered %s %s", p.hook.URL, resp.Status, oneLine(snippet))
}

// temporary4xx are the 4xx answers of a receiver that is not ready (or
// not yet deployed, or misconfigured) rather than one refusing an event.
func temporary4xx(code int) bool {
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusRequestTimeout,
		http.StatusTooEarly, http.StatusTooManyRequests:
		return true
	}
	return false
}

func (p *Poster) failed(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status.Failures++
	p.status.LastError = err.Error()
	p.status.LastErrorAt = p.now()
	d := min(p.hook.RetryMin<<min(p.status.Failures-1, 30), p.hook.RetryMax)
	d = time.Duration(float64(d) * (0.9 + 0.2*rand.Float64())) // ±10%, as the queue's backoff
	p.status.NextAttempt = p.now().Add(d)
	p.log.Warn("webhook: post failed; waiting", "err", err, "failures", p.status.Failures, "next_attempt", p.status.NextAttempt.Format(time.RFC3339))
}

func (p *Poster) succeeded() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status.Failures > 0 {
		p.log.Info("webhook: posting again", "after_failures", p.status.Failures)
	}
	p.status.Failures = 0
	p.status.NextAttempt = time.Time{}
}

// wait sleeps until the next attempt, or ctx ends. Signals of new events
// are drained meanwhile (nil: none), as they change nothing.
func (p *Poster) wait(ctx context.Context, signal <-chan struct{}) {
	p.mu.Lock()
	d := p.status.NextAttempt.Sub(p.now())
	p.mu.Unlock()
	if d <= 0 {
		d = p.hook.RetryMin
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-signal:
		}
	}
}

func oneLine(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	return strings.ToValidUTF8(s, "?")
}

// SignatureHeader carries the HMAC of a post when the webhook has a secret.
const SignatureHeader = "X-Relay-Signature"

// Sign returns the X-Relay-Signature value for body posted at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<unix seconds>.<body>">". The
// time is signed with the body, so a receiver can refuse old replays.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks an X-Relay-Signature value against body, as a receiver
// does, and returns the signing time.
func Verify(secret []byte, header string, body []byte) (time.Time, error) {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return time.Time{}, errors.New("webhook: malformed signature header")
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return time.Time{}, errors.New("webhook: malformed signature")
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	if !hmac.Equal(got, m.Sum(nil)) {
		return time.Time{}, errors.New("webhook: signature does not match")
	}
	return time.Unix(sec, 0), nil
}

// Event is the JSON body of one post.
type Event struct {
	// ID is the idempotency key, also sent as Idempotency-Key: the same
	// event posted twice has the same ID. For a recipient's outcome it is
	// relay:queue ID:recipient index:attempt:event, so a delivery
	// repeated after a crash reports under the same ID.
	ID       string    `json:"id"`
	Event    string    `json:"event"` // received, delivered, deferred, failed, dsn, held, released, deleted
	Time     time.Time `json:"time"`  // when it happened
	Relay    string    `json:"relay"` // the hostname of the relay that posts
	QueueID  string    `json:"queue_id"`
	From     string    `json:"from"` // the envelope sender; "" for the null sender
	Received time.Time `json:"received"`
	// Recipient is the envelope recipient (recipient events only), and
	// OriginalRecipient its ORCPT: the address the sender used before an
	// alias was expanded.
	Recipient         string     `json:"recipient,omitempty"`
	OriginalRecipient string     `json:"original_recipient,omitempty"`
	Attempt           int        `json:"attempt,omitempty"`
	Reply             string     `json:"reply,omitempty"`    // the next hop's reply, or the error standing for one
	NextHop           string     `json:"next_hop,omitempty"` // the lane: "local", "smtp:127.0.0.3:2525", "mx:example.org:25"
	Remote            string     `json:"remote,omitempty"`   // the server that answered
	NextAttempt       *time.Time `json:"next_attempt,omitempty"`
	// DSN events: the DSN's queue ID, what it reports and on whom.
	DSNQueueID string   `json:"dsn_queue_id,omitempty"`
	DSNAction  string   `json:"dsn_action,omitempty"`
	Recipients []string `json:"recipients,omitempty"`
	// Text describes operator events.
	Text string `json:"text,omitempty"`
}

// NewEvent makes the JSON event of an outbox notice, posted by relay
// hostname.
func NewEvent(hostname string, n *spool.Notice) Event {
	ev := Event{
		Event: n.Kind, Time: n.At.UTC(), Relay: hostname, QueueID: n.ID, From: mailbox(n.From), Received: n.Received.UTC(),
		Attempt: n.Attempt, Reply: n.Reply, NextHop: n.NextHop, Remote: n.Remote,
	}
	prefix := hostname + ":" + n.ID + ":"
	switch {
	case n.Kind == spool.NoticeDSN:
		ev.ID = prefix + "dsn:" + n.DSNID
		ev.DSNQueueID, ev.DSNAction = n.DSNID, n.Text
		for _, r := range n.Recipients {
			ev.Recipients = append(ev.Recipients, mailbox(r))
		}
	case n.Rcpt < 0:
		ev.ID = prefix + n.Kind + ":" + strconv.FormatUint(n.Seq, 10)
		ev.Text = n.Text
	default:
		ev.ID = prefix + strconv.Itoa(n.Rcpt) + ":" + strconv.Itoa(n.Attempt) + ":" + n.Kind
		ev.Recipient = mailbox(n.To)
		if p, err := envelope.ParseRcptParams(strings.TrimSpace(n.Params)); err == nil && p.ORcpt != "" {
			ev.OriginalRecipient = p.ORcpt
		}
		if !n.NextAttempt.IsZero() {
			t := n.NextAttempt.UTC()
			ev.NextAttempt = &t
		}
	}
	return ev
}

// mailbox turns a wire-form path into the address a receiver expects:
// "<u@d>" is "u@d", "<>" is "".
func mailbox(path string) string {
	return strings.TrimSuffix(strings.TrimPrefix(path, "<"), ">")
}
