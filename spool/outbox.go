package spool

import (
	"encoding/binary"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// The outbox: notices of what happened to queued mail, kept for
// subscribers (the relay's webhooks) under w/<subscriber>/<seq>. A notice
// is written in the same transaction as the change it reports (a
// delivery outcome, a DSN, an operator's hold), so a crash can never
// keep the one without the other; the subscriber's worker reads notices
// in order, posts them, and acknowledges (deletes) each once it got
// through. See doc.go for the key and its invariants.

const prefixOutbox = "w/"

// Notice kinds. Outcome kinds are the recipient statuses.
const (
	NoticeReceived  = EventReceived  // a message was accepted (one notice per recipient)
	NoticeDelivered = EventDelivered // a recipient was delivered
	NoticeDeferred  = EventDeferred  // an attempt failed temporarily
	NoticeFailed    = EventFailed    // a recipient failed for good
	NoticeDSN       = "dsn"          // a delivery status notification was queued
	NoticeHeld      = EventHeld      // an operator held a message
	NoticeReleased  = EventReleased  // an operator released a message
	NoticeDeleted   = EventDeleted   // an operator deleted a message
	noticeKindsText = "received, delivered, deferred, failed, dsn, held, released, deleted"
)

// NoticeKinds lists every notice kind, for configuration checks.
var NoticeKinds = []string{NoticeReceived, NoticeDelivered, NoticeDeferred, NoticeFailed, NoticeDSN, NoticeHeld, NoticeReleased, NoticeDeleted}

// Subscriber is a consumer of notices: the kinds it wants, and how long
// an unacknowledged notice is kept.
type Subscriber struct {
	// Name is part of the key: 1 to 64 characters of [a-z0-9._-].
	Name  string
	Kinds []string
	// TTL is the Badger TTL of its notices: one not acknowledged by then
	// disappears. 0: kept until acknowledged.
	TTL time.Duration
}

var subscriberName = regexp.MustCompile(`^[a-z0-9._-]{1,64}$`)

// ValidSubscriberName reports whether name can name a Subscriber.
func ValidSubscriberName(name string) bool { return subscriberName.MatchString(name) }

// Notice is one event for one subscriber.
type Notice struct {
	Seq  uint64    // its place in the outbox: unique and increasing
	Kind string    // one of NoticeKinds
	At   time.Time // when the change happened
	ID   string    // queue ID of the message concerned
	From string    // its reverse path, wire form
	// Received is when the message was accepted.
	Received time.Time
	// Rcpt is the recipient's index, -1 for a notice about the message.
	Rcpt int
	// To and Params are the recipient's forward path and RCPT parameters
	// (ORCPT, NOTIFY), wire form.
	To, Params string
	// Attempt is the recipient's attempt count including this one.
	Attempt     int
	Reply       string    // the reply or error of the attempt
	Remote      string    // the peer that answered ("local" for a mailbox)
	NextHop     string    // the lane the attempt went through
	NextAttempt time.Time // deferred: when the next attempt is due
	// DSNID is the queue ID of the DSN (kind dsn); Text says more (the
	// DSN's action, an operator action's description).
	DSNID string
	Text  string
	// Recipients are the forward paths a DSN reports on.
	Recipients []string
}

// outbox is the spool's side of the notices: who wants which kinds, and
// the gate that tells readers how far the outbox is complete.
type outbox struct {
	subs map[string][]Subscriber // kind → subscribers wanting it

	mu       sync.Mutex
	inflight map[uint64]int // seqs of notices whose transaction is open
	last     uint64         // the highest seq handed out
	signals  map[string]chan struct{}
}

func newOutbox(subs []Subscriber) (*outbox, error) {
	o := &outbox{subs: map[string][]Subscriber{}, inflight: map[uint64]int{}, signals: map[string]chan struct{}{}}
	for _, sb := range subs {
		if !ValidSubscriberName(sb.Name) {
			return nil, fmt.Errorf("outbox subscriber name %q (want 1 to 64 of [a-z0-9._-])", sb.Name)
		}
		if _, dup := o.signals[sb.Name]; dup {
			return nil, fmt.Errorf("outbox subscriber %q named twice", sb.Name)
		}
		o.signals[sb.Name] = make(chan struct{}, 1)
		for _, k := range sb.Kinds {
			if !slices.Contains(NoticeKinds, k) {
				return nil, fmt.Errorf("outbox subscriber %q: unknown kind %q (want %s)", sb.Name, k, noticeKindsText)
			}
			o.subs[k] = append(o.subs[k], sb)
		}
	}
	return o, nil
}

// wants reports whether any subscriber wants notices of kind.
func (o *outbox) wants(kind string) bool { return len(o.subs[kind]) > 0 }

func outboxPrefix(name string) []byte {
	return append(append([]byte(prefixOutbox), name...), '/')
}

func outboxKey(name string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(outboxPrefix(name), seq)
}

// notify adds n to txn for every subscriber of its kind, under one new
// seq. The seq stays "in flight" (below the watermark) until txn ends,
// committed or not.
func (s *Spool) notify(txn *wtxn, n *Notice) error {
	subs := s.outbox.subs[n.Kind]
	if len(subs) == 0 {
		return nil
	}
	o := s.outbox
	o.mu.Lock()
	seq, err := s.ids.next()
	if err == nil {
		o.inflight[seq]++
		o.last = max(o.last, seq)
	}
	o.mu.Unlock()
	if err != nil {
		return err
	}
	txn.onDone(func() {
		o.mu.Lock()
		if o.inflight[seq]--; o.inflight[seq] <= 0 {
			delete(o.inflight, seq)
		}
		o.mu.Unlock()
	})
	n.Seq = seq
	v := encodeNotice(n)
	for _, sb := range subs {
		e := badger.NewEntry(outboxKey(sb.Name, seq), v)
		if sb.TTL > 0 {
			e = e.WithTTL(sb.TTL)
		}
		if err := txn.SetEntry(e); err != nil {
			return err
		}
		ch := o.signals[sb.Name]
		txn.afterCommit(func() {
			select {
			case ch <- struct{}{}:
			default:
			}
		})
	}
	return nil
}

// NoticeSignal returns a channel that receives a value after a
// transaction wrote notices for subscriber name (nil for an unknown
// name); a worker waits on it when its outbox is empty.
func (s *Spool) NoticeSignal(name string) <-chan struct{} {
	return s.outbox.signals[name]
}

// NoticeWatermark returns a seq below which the outbox is complete: every
// notice with a smaller seq was committed (or abandoned) before the call,
// and every notice written later has a larger seq. A reader that read
// after the call may move its cursor up to it and never miss a notice.
func (s *Spool) NoticeWatermark() uint64 {
	o := s.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	w := o.last + 1
	for seq := range o.inflight {
		w = min(w, seq)
	}
	return w
}

// Notices returns up to limit notices of subscriber name with a seq
// above after, in seq order.
func (s *Spool) Notices(name string, after uint64, limit int) ([]Notice, error) {
	if err := s.begin(); err != nil {
		return nil, fmt.Errorf("spool: notices %s: %w", name, err)
	}
	defer s.end()
	p := outboxPrefix(name)
	var out []Notice
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: true, PrefetchSize: min(limit, 100)})
		defer it.Close()
		for it.Seek(outboxKey(name, after+1)); it.Valid() && len(out) < limit; it.Next() {
			k := it.Item().Key()
			if len(k) != len(p)+8 {
				return fmt.Errorf("%w: outbox key %q", errCorrupt, k)
			}
			var n Notice
			err := it.Item().Value(func(v []byte) error {
				var err error
				n, err = decodeNotice(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("outbox key %q: %w", k, err)
			}
			n.Seq = binary.BigEndian.Uint64(k[len(p):])
			out = append(out, n)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: notices %s: %w", name, err)
	}
	return out, nil
}

// AckNotices deletes notices of subscriber name, once they were posted.
// The deletion is not waited for: after a crash a notice may come back
// and be posted again (at least once).
func (s *Spool) AckNotices(name string, seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	if err := s.begin(); err != nil {
		return fmt.Errorf("spool: ack notices %s: %w", name, err)
	}
	defer s.end()
	s.writeGate.RLock()
	defer s.writeGate.RUnlock()
	err := s.update(func(txn *wtxn) error {
		for _, seq := range seqs {
			if err := txn.Delete(outboxKey(name, seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool: ack notices %s: %w", name, err)
	}
	s.writes.Add(1)
	return nil
}

// Backlog is what waits in a subscriber's outbox.
type Backlog struct {
	Notices int
	Oldest  time.Time // of the oldest notice; zero when none
}

// NoticeBacklog counts the notices of subscriber name (keys only, and
// the first value for its time).
func (s *Spool) NoticeBacklog(name string) (Backlog, error) {
	if err := s.begin(); err != nil {
		return Backlog{}, fmt.Errorf("spool: backlog %s: %w", name, err)
	}
	defer s.end()
	var b Backlog
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: outboxPrefix(name)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if b.Notices == 0 {
				err := it.Item().Value(func(v []byte) error {
					n, err := decodeNotice(v)
					b.Oldest = n.At
					return err
				})
				if err != nil {
					return err
				}
			}
			b.Notices++
		}
		return nil
	})
	if err != nil {
		return Backlog{}, fmt.Errorf("spool: backlog %s: %w", name, err)
	}
	return b, nil
}

// OutboxNames returns the subscriber names that have notices, configured
// or not (a webhook removed from the configuration leaves its notices
// until their TTL).
func (s *Spool) OutboxNames() ([]string, error) {
	if err := s.begin(); err != nil {
		return nil, fmt.Errorf("spool: outbox names: %w", err)
	}
	defer s.end()
	var names []string
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixOutbox)})
		defer it.Close()
		for it.Rewind(); it.Valid(); {
			k := it.Item().Key()[len(prefixOutbox):]
			if len(k) < 9 || k[len(k)-9] != '/' {
				return fmt.Errorf("%w: outbox key %q", errCorrupt, it.Item().Key())
			}
			name := string(k[:len(k)-9])
			names = append(names, name)
			// Skip the rest of this name's keys: 0xff... is above any seq.
			it.Seek(append(outboxPrefix(name), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: outbox names: %w", err)
	}
	return names, nil
}

// noticeReceived writes a "received" notice per recipient of a message
// being stored in txn.
func (s *Spool) noticeReceived(txn *wtxn, id string, env *Envelope, rcpts []Recipient) error {
	if !s.outbox.wants(NoticeReceived) {
		return nil
	}
	for i, r := range rcpts {
		n := Notice{Kind: NoticeReceived, At: env.Received, ID: id, From: env.From, Received: env.Received,
			Rcpt: i, To: r.To, Params: r.Params, Text: "client " + env.Client}
		if err := s.notify(txn, &n); err != nil {
			return err
		}
	}
	return nil
}

// noticeMessage writes a notice about a whole message (operator actions).
func (s *Spool) noticeMessage(txn *wtxn, kind, id string, rec *msgRecord, ev Event) error {
	if !s.outbox.wants(kind) {
		return nil
	}
	n := Notice{Kind: kind, At: ev.At, ID: id, From: rec.From, Received: rec.Received, Rcpt: -1, Text: ev.Text}
	return s.notify(txn, &n)
}

func encodeNotice(n *Notice) []byte {
	e := newEncoder(96 + len(n.ID) + len(n.From) + len(n.To) + len(n.Params) + len(n.Reply) + len(n.Text))
	e.str(n.Kind)
	e.time(n.At)
	e.str(n.ID)
	e.str(n.From)
	e.time(n.Received)
	e.varint(int64(n.Rcpt))
	e.str(n.To)
	e.str(n.Params)
	e.varint(int64(n.Attempt))
	e.str(n.Reply)
	e.str(n.Remote)
	e.str(n.NextHop)
	e.time(n.NextAttempt)
	e.str(n.DSNID)
	e.str(n.Text)
	e.uvarint(uint64(len(n.Recipients)))
	for _, r := range n.Recipients {
		e.str(r)
	}
	return e.b
}

func decodeNotice(b []byte) (Notice, error) {
	d := newDecoder(b)
	var n Notice
	n.Kind = d.str("kind")
	n.At = d.time("time")
	n.ID = d.str("id")
	n.From = d.str("from")
	n.Received = d.time("received")
	n.Rcpt = int(d.varint("recipient"))
	n.To = d.str("to")
	n.Params = d.str("params")
	n.Attempt = int(d.varint("attempt"))
	n.Reply = d.str("reply")
	n.Remote = d.str("remote")
	n.NextHop = d.str("next hop")
	n.NextAttempt = d.time("next attempt")
	n.DSNID = d.str("dsn id")
	n.Text = d.str("text")
	count := d.uvarint("recipient count")
	if d.err == nil && count > uint64(len(d.b)) {
		d.fail("recipient count")
	}
	for i := uint64(0); d.err == nil && i < count; i++ {
		n.Recipients = append(n.Recipients, d.str("recipient"))
	}
	return n, d.err
}
