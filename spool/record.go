package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Event kinds written by Record.
const (
	EventDelivered = "delivered"
	EventDeferred  = "deferred"
	EventFailed    = "failed"
)

// Result is the outcome of one delivery attempt for one recipient.
type Result struct {
	Rcpt        int       // recipient index
	Status      Status    // StatusDelivered, StatusDeferred or StatusFailed
	Reply       string    // the remote reply, or the local error standing for one
	NextAttempt time.Time // StatusDeferred: when to try again
	Remote      string    // the peer that answered, "" when none did
	// Mailbox, for a local delivery, is the user whose mailbox receives
	// MailboxHeader followed by the body, in the same transaction that
	// retires the recipient: exactly once.
	Mailbox       string
	MailboxHeader []byte
	// DelayWarned marks that a delay DSN for this recipient goes out in
	// this same transaction, so there is only ever one.
	DelayWarned bool
	// NextHop names the lane the attempt went through, for the outbox
	// notice of the outcome; "" when the recipient was never routed.
	NextHop string
}

// Outgoing is a new message created by a Record transaction: the DSN that
// the recorded outcomes owe, stored in the same transaction so that after
// a crash there is exactly one, never zero, never two.
type Outgoing struct {
	Envelope   Envelope
	Recipients []Recipient
	Body       []byte
	// For lists the recipients (indexes in the recorded message) the DSN
	// reports on. It is stored only if at least one of them changes state
	// in this transaction: a repeated report queues no second DSN.
	For []int
	// Action is what the DSN reports (failed, delayed, delivered,
	// relayed, expanded), for the outbox notice.
	Action string
}

// maxConflictRetries bounds retries of a transaction that lost a conflict
// with another recording for the same message (two next hops finishing at
// once).
const maxConflictRetries = 20

// Record stores the results of an attempt in one transaction: each
// recipient's new state, its schedule key moved (deferred) or removed
// (delivered, failed), mailbox entries for local deliveries, and an event
// per result. When no recipient is left pending or deferred the message
// retires: its envelope, body, recipients and events are deleted in the
// same transaction. Record returns at commit; the transaction becomes
// durable within soonSyncDelay, usually with the next group of enqueues.
//
// dsn, when not nil, is stored as a new message in the same transaction
// (see Outgoing); its ID is returned ("" when none was stored).
func (s *Spool) Record(ctx context.Context, id string, results []Result, dsn *Outgoing) (string, error) {
	if err := s.begin(); err != nil {
		return "", fmt.Errorf("spool: record %s: %w", id, err)
	}
	defer s.end()
	if err := s.brokenErr(); err != nil {
		return "", fmt.Errorf("spool: record %s: %w", id, err)
	}
	for _, r := range results {
		switch r.Status {
		case StatusDelivered, StatusFailed, StatusDeferred:
		default:
			return "", fmt.Errorf("spool: record %s: recipient %d: status %q is no outcome", id, r.Rcpt, r.Status)
		}
	}
	if dsn != nil && (dsn.Envelope.From == "" || len(dsn.Recipients) == 0) {
		return "", fmt.Errorf("spool: record %s: DSN without reverse path or recipients", id)
	}
	// Record does not join the group commit's "commits in flight" count:
	// nothing waits for its sync, and a sync round must not be held back
	// for it while enqueues wait to answer 250.
	var dsnID string
	for try := 0; ; try++ {
		var err error
		dsnID, err = s.recordTxn(id, results, dsn)
		if err == nil {
			s.writes.Add(1)
			break
		}
		if errors.Is(err, badger.ErrConflict) && try < maxConflictRetries {
			continue
		}
		return "", fmt.Errorf("spool: record %s: %w", id, err)
	}
	s.syncSoon()
	return dsnID, nil
}

func (s *Spool) recordTxn(id string, results []Result, dsn *Outgoing) (string, error) {
	s.fresh.drop(id)
	s.writeGate.RLock()
	defer s.writeGate.RUnlock()
	defer s.floor.leave(s.floor.enter())
	txn := s.newWriteTxn()
	defer txn.Discard()
	rec, err := getMsgRecord(txn, id)
	if err != nil {
		return "", err
	}
	now := s.now()
	var body []byte // read once, only when a mailbox needs it
	final := make([]bool, rec.NRcpt)
	changed := make([]bool, rec.NRcpt)
	reported := make([]bool, rec.NRcpt)
	rcpts := make([]Recipient, rec.NRcpt) // as this transaction leaves them
	hadEvents := false                    // any attempt recorded before: events beyond "received"
	var events []Event                    // under e/ if the message stays queued, else in its summary
	for _, res := range results {
		if res.Rcpt < 0 || res.Rcpt >= rec.NRcpt {
			return "", fmt.Errorf("recipient %d of %d", res.Rcpt, rec.NRcpt)
		}
		n := uint32(res.Rcpt)
		r, err := getRcpt(txn, id, n)
		if err != nil {
			return "", err
		}
		reported[n] = true
		rcpts[n] = r
		hadEvents = hadEvents || r.Attempts > 0
		if r.Status == StatusDelivered || r.Status == StatusFailed {
			final[n] = true
			continue // already final: a duplicate report changes nothing
		}
		if err := txn.Delete(schedKey(rec.Priority, dueNanos(r.NextAttempt), id, n)); err != nil {
			return "", err
		}
		r.Status, r.LastReply = res.Status, res.Reply
		r.Attempts++
		r.DelayWarned = r.DelayWarned || res.DelayWarned
		changed[n] = true
		final[n] = res.Status != StatusDeferred
		if res.Status == StatusDeferred {
			due := s.floor.at(res.NextAttempt)
			r.NextAttempt = time.Unix(0, int64(due))
			if !rec.Held {
				if err := txn.Set(schedKey(rec.Priority, due, id, n), []byte{}); err != nil {
					return "", err
				}
			}
		}
		rcpts[n] = r
		enc, err := encodeRcpt(&r)
		if err != nil {
			return "", err
		}
		if err := txn.Set(rcptKey(id, n), enc); err != nil {
			return "", err
		}
		if res.Mailbox != "" && res.Status == StatusDelivered {
			if rec.BodyFile {
				err = s.putMailboxFiled(txn, res.Mailbox, res.MailboxHeader, id, rec)
			} else {
				if body == nil {
					if body, err = s.mailboxBody(txn, id, rec); err != nil {
						return "", err
					}
				}
				err = s.putMailbox(txn, res.Mailbox, res.MailboxHeader, body)
			}
			if err != nil {
				return "", err
			}
		}
		text := res.Reply
		if res.Remote != "" {
			text = "relay=" + res.Remote + " " + text
		}
		if res.Status == StatusDeferred {
			text += " (next attempt " + r.NextAttempt.UTC().Format(time.RFC3339) + ")"
		}
		events = append(events, Event{At: now, Kind: string(res.Status), Rcpt: int(n), Text: text})
		if s.outbox.wants(string(res.Status)) {
			nt := Notice{Kind: string(res.Status), At: now, ID: id, From: rec.From, Received: rec.Received,
				Rcpt: int(n), To: r.To, Params: r.Params, Attempt: r.Attempts, Reply: res.Reply,
				Remote: res.Remote, NextHop: res.NextHop}
			if res.Status == StatusDeferred {
				nt.NextAttempt = r.NextAttempt
			}
			if err := s.notify(txn, &nt); err != nil {
				return "", err
			}
		}
	}
	// The recipients not reported here decide whether the message retires.
	for n := range final {
		if reported[n] {
			continue
		}
		r, err := getRcpt(txn, id, uint32(n))
		if err != nil {
			return "", err
		}
		rcpts[n] = r
		hadEvents = hadEvents || r.Attempts > 0
		final[n] = r.Status == StatusDelivered || r.Status == StatusFailed
	}
	dsnID, err := s.putOutgoing(txn, dsn, changed)
	if err != nil {
		return "", err
	}
	if dsnID != "" && s.outbox.wants(NoticeDSN) {
		nt := Notice{Kind: NoticeDSN, At: now, ID: id, From: rec.From, Received: rec.Received, Rcpt: -1,
			DSNID: dsnID, Text: dsn.Action}
		for _, n := range dsn.For {
			if n >= 0 && n < len(rcpts) {
				nt.Recipients = append(nt.Recipients, rcpts[n].To)
			}
		}
		if err := s.notify(txn, &nt); err != nil {
			return "", err
		}
	}
	for _, f := range final {
		if !f {
			for i := range events {
				seq, err := s.ids.next()
				if err != nil {
					return "", err
				}
				if err := txn.Set(eventKey(id, seq), encodeEvent(&events[i])); err != nil {
					return "", err
				}
			}
			return dsnID, txn.Commit()
		}
	}
	if err := s.retire(txn, id, rec, rcpts, hadEvents, events); err != nil {
		return "", err
	}
	return dsnID, txn.Commit()
}

// putOutgoing stores dsn as a new message when one of the recipients it
// reports on changed state in this transaction.
func (s *Spool) putOutgoing(txn *wtxn, dsn *Outgoing, changed []bool) (string, error) {
	if dsn == nil {
		return "", nil
	}
	fresh := len(dsn.For) == 0
	for _, n := range dsn.For {
		if n >= 0 && n < len(changed) && changed[n] {
			fresh = true
		}
	}
	if !fresh {
		return "", nil // a repeated report: its DSN went out the first time
	}
	v, err := s.ids.next()
	if err != nil {
		return "", err
	}
	id := formatID(v)
	now := s.now()
	env := dsn.Envelope
	if env.Received.IsZero() {
		env.Received = now
	}
	if _, err := putMessage(txn, id, s.floor.at(now), &env, dsn.Recipients, inline(dsn.Body)); err != nil {
		return "", err
	}
	return id, nil
}

// retire deletes every key of a message whose recipients are all final:
// keys computed from the message record, so no iterator is needed, except
// for events when earlier attempts (or operator actions) wrote some.
// First it keeps the message's summary for the history window
// (keepHistory), with rcpts (nil: as stored) and final, this
// transaction's events, never stored.
func (s *Spool) retire(txn *wtxn, id string, rec *msgRecord, rcpts []Recipient, hadEvents bool, final []Event) error {
	hadEvents = hadEvents || rec.ExtraEvents
	if err := s.keepHistory(txn, id, rec, rcpts, hadEvents, final); err != nil {
		return err
	}
	keys := [][]byte{msgKey(id)}
	for n := 0; n < chunkCount(rec); n++ {
		keys = append(keys, chunkKey(id, uint32(n)))
	}
	for n := 0; n < rec.NRcpt; n++ {
		keys = append(keys, rcptKey(id, uint32(n)))
	}
	if idv, err := parseID(id); err == nil && !rec.InlineReceived {
		keys = append(keys, eventKey(id, idv)) // the "received" event
	}
	if hadEvents {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: eventPrefix(id)})
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		it.Close()
	}
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	if rec.BodyFile {
		txn.afterCommit(func() { s.retireBody(id) })
	}
	return nil
}

// mailboxBody reads the body of a message for a local mailbox.
func (s *Spool) mailboxBody(txn getter, id string, rec *msgRecord) ([]byte, error) {
	b, err := s.readBody(txn, id, rec)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return b.ReadAll()
}

// DueAfter is Due continuing after the entry after (from the start when
// after is nil): the scheduler pages through due work without seeing the
// same entries again.
func (s *Spool) DueAfter(after *Due, now time.Time, limit int) ([]Due, error) {
	if after == nil {
		return s.Due(now, limit)
	}
	if limit <= 0 {
		return nil, fmt.Errorf("spool: due: limit %d must be positive", limit)
	}
	if err := s.begin(); err != nil {
		return nil, fmt.Errorf("spool: due: %w", err)
	}
	defer s.end()
	bound := dueNanos(now)
	start := append(schedKey(0, dueNanos(after.At), after.ID, uint32(after.Rcpt)), 0)
	var out []Due
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixSchedule)})
		defer it.Close()
		for it.Seek(start); it.Valid() && len(out) < limit; it.Next() {
			d, err := parseSchedKey(it.Item().Key())
			if err != nil {
				return err
			}
			if dueNanos(d.At) > bound {
				break
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: due: %w", err)
	}
	return out, nil
}

// MailboxEntry describes one message in a local mailbox.
type MailboxEntry struct {
	Seq  uint64 // unique, increasing, stable: usable as a POP3 UID
	Size int64
}

func mailboxPrefix(user string) []byte {
	return append(append([]byte(prefixMailbox), user...), '/')
}

func mailboxKey(user string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(mailboxPrefix(user), seq)
}

func (s *Spool) putMailbox(txn *wtxn, user string, hdr, body []byte) error {
	if user == "" || bytes.IndexByte([]byte(user), '/') >= 0 {
		return fmt.Errorf("bad mailbox name %q", user)
	}
	seq, err := s.ids.next()
	if err != nil {
		return err
	}
	v := make([]byte, 0, len(hdr)+len(body))
	v = append(append(v, hdr...), body...)
	return txn.Set(mailboxKey(user, seq), v)
}

// Mailbox lists the messages in user's mailbox, oldest first (as
// ListMailbox).
func (s *Spool) Mailbox(user string) ([]MailboxEntry, error) { return s.ListMailbox(user) }

// MailboxMessage returns one message of user's mailbox, whole. POP3
// reads it as a stream instead (OpenMailboxMessage).
func (s *Spool) MailboxMessage(user string, seq uint64) ([]byte, error) {
	b, err := s.OpenMailboxMessage(user, seq)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return b.ReadAll()
}

// RaiseFloor promises the scheduler that no schedule key due before t
// will be written from now on: later writers clamp their due times to at
// least t. It returns once every writer that chose a due time before the
// call has committed, so a read started after RaiseFloor sees every key
// below t that will ever exist, and the scheduler may seek the index from
// its own floor instead of stepping over the deleted keys that retired
// deliveries leave at its start.
func (s *Spool) RaiseFloor(t time.Time) { s.floor.raise(t) }
