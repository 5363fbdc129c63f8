package spool

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Operator actions on queued messages (`relay queue hold|release|retry|
// delete`), each one transaction that keeps the invariants of doc.go and
// adds an event, and the read-only helpers the admin API needs.

// Event kinds written by operator actions.
const (
	EventHeld     = "held"
	EventReleased = "released"
	EventRetried  = "retried"
	EventDeleted  = "deleted"
	EventBounced  = "bounced"
)

// ErrAmbiguous is returned (wrapped) by Resolve when a prefix matches more
// than one message.
var ErrAmbiguous = errors.New("spool: ambiguous message ID prefix")

// ErrHeld is returned (wrapped) by Retry for a held message: it is never
// attempted until it is released.
var ErrHeld = errors.New("spool: message is held")

// Resolve returns the ID of the one queued or recently retired message
// whose ID starts with prefix (case-insensitive, with Crockford's reading
// of I, L and O). It returns an error wrapping ErrNotFound when no message
// matches and ErrAmbiguous when several do.
func (s *Spool) Resolve(prefix string) (string, error) {
	if err := s.begin(); err != nil {
		return "", fmt.Errorf("spool: resolve %q: %w", prefix, err)
	}
	defer s.end()
	p, ok := normalizeIDPrefix(prefix)
	if !ok {
		return "", fmt.Errorf("spool: resolve %q: %w", prefix, ErrNotFound)
	}
	var found []string
	err := s.db.View(func(txn *badger.Txn) error {
		for _, kp := range []string{prefixMessage, prefixHistory} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(kp + p)})
			for it.Rewind(); it.Valid() && len(found) < 2; it.Next() {
				id := string(it.Item().Key()[len(kp):])
				if len(found) == 0 || found[0] != id {
					found = append(found, id)
				}
			}
			it.Close()
		}
		return nil
	})
	switch {
	case err != nil:
		return "", fmt.Errorf("spool: resolve %q: %w", prefix, err)
	case len(found) == 0:
		return "", fmt.Errorf("spool: resolve %q: %w", prefix, ErrNotFound)
	case len(found) > 1:
		return "", fmt.Errorf("spool: resolve %q: %w (%s, %s, ...)", prefix, ErrAmbiguous, found[0], found[1])
	}
	return found[0], nil
}

// normalizeIDPrefix spells a typed ID prefix the way IDs are stored.
func normalizeIDPrefix(p string) (string, bool) {
	if p == "" || len(p) > IDLen {
		return "", false
	}
	b := make([]byte, len(p))
	for i := 0; i < len(p); i++ {
		d := idDigit(p[i])
		if d < 0 {
			return "", false
		}
		b[i] = idAlphabet[d]
	}
	return string(b), true
}

// Hold stops all delivery attempts of message id until Release: the
// schedule keys of its pending and deferred recipients are deleted and the
// envelope is marked held, which Record and Enqueue respect. It returns how
// many recipients were unscheduled; 0 and no error when the message was
// already held.
func (s *Spool) Hold(id string) (int, error) {
	return s.operate("hold", id, false, func(txn *wtxn, id string, rec *msgRecord, now time.Time) (int, []Event, error) {
		if rec.Held {
			return 0, nil, nil
		}
		n, err := s.eachOpen(txn, id, rec, func(i uint32, r *Recipient) (bool, error) {
			return false, txn.Delete(schedKey(rec.Priority, dueNanos(r.NextAttempt), id, i))
		})
		if err != nil {
			return 0, nil, err
		}
		rec.Held = true
		ev := Event{At: now, Kind: EventHeld, Rcpt: -1, Text: "by the operator: " + rcpts(n) + " will not be attempted until released"}
		return n, []Event{ev}, s.noticeMessage(txn, NoticeHeld, id, rec, ev)
	})
}

// Release undoes Hold: the message's pending and deferred recipients are
// due now. It returns how many recipients were scheduled; 0 and no error
// when the message was not held.
func (s *Spool) Release(id string) (int, error) {
	return s.operate("release", id, true, func(txn *wtxn, id string, rec *msgRecord, now time.Time) (int, []Event, error) {
		if !rec.Held {
			return 0, nil, nil
		}
		due := s.floor.at(now)
		n, err := s.eachOpen(txn, id, rec, func(i uint32, r *Recipient) (bool, error) {
			r.NextAttempt = time.Unix(0, int64(due))
			return true, txn.Set(schedKey(rec.Priority, due, id, i), []byte{})
		})
		if err != nil {
			return 0, nil, err
		}
		rec.Held = false
		ev := Event{At: now, Kind: EventReleased, Rcpt: -1, Text: "by the operator: " + rcpts(n) + " due now"}
		return n, []Event{ev}, s.noticeMessage(txn, NoticeReleased, id, rec, ev)
	})
}

// Retry makes the pending and deferred recipients of message id due now,
// whatever their backoff said. It returns how many recipients were moved;
// those already due count as not moved. A held message is left alone with
// an error wrapping ErrHeld.
func (s *Spool) Retry(id string) (int, error) {
	return s.operate("retry", id, true, s.retryOp)
}

// Retried is one message RetryAll changed.
type Retried struct {
	ID         string
	Recipients int // recipients made due now
}

// RetryAll is Retry for every queued message that is not held, with one
// storage sync for all of them instead of one each. It returns the
// messages that changed, in ID order.
func (s *Spool) RetryAll() ([]Retried, error) {
	var ids []string
	err := s.List(func(m *Message) error {
		if !m.Held {
			ids = append(ids, m.ID)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: retry all: %w", err)
	}
	if err := s.begin(); err != nil {
		return nil, fmt.Errorf("spool: retry all: %w", err)
	}
	defer s.end()
	var out []Retried
	var firstErr error
	for _, id := range ids {
		n, err := s.apply("retry", id, true, s.retryOp)
		switch {
		case errors.Is(err, ErrNotFound), errors.Is(err, ErrHeld):
			// retired or held since the listing
		case err != nil:
			firstErr = err
		case n > 0:
			out = append(out, Retried{ID: id, Recipients: n})
		}
		if firstErr != nil {
			break
		}
	}
	// What was changed is made durable even when a later message failed.
	if err := s.waitDurable(context.Background()); err != nil && firstErr == nil {
		firstErr = fmt.Errorf("spool: retry all: %w", err)
	}
	return out, firstErr
}

// retryOp is Retry's change to one message.
func (s *Spool) retryOp(txn *wtxn, id string, rec *msgRecord, now time.Time) (int, []Event, error) {
	if rec.Held {
		return 0, nil, ErrHeld
	}
	due := s.floor.at(now)
	n := 0
	_, err := s.eachOpen(txn, id, rec, func(i uint32, r *Recipient) (bool, error) {
		old := dueNanos(r.NextAttempt)
		if old <= due {
			return false, nil // already due
		}
		if err := txn.Delete(schedKey(rec.Priority, old, id, i)); err != nil {
			return false, err
		}
		n++
		r.NextAttempt = time.Unix(0, int64(due))
		return true, txn.Set(schedKey(rec.Priority, due, id, i), []byte{})
	})
	if err != nil || n == 0 {
		return 0, nil, err
	}
	ev := Event{At: now, Kind: EventRetried, Rcpt: -1, Text: "by the operator: " + rcpts(n) + " due now"}
	return n, []Event{ev}, nil
}

// Delete removes message id from the queue without a DSN, as if it had
// retired: its summary, with a "deleted" event and the recipients left
// pending or deferred as they were, stays in the history window. It
// returns how many recipients were still to be delivered.
func (s *Spool) Delete(id string) (int, error) {
	return s.operate("delete", id, false, s.deleteOp("by the operator, without a DSN"))
}

// deleteOp retires a message without a DSN, with an event that says why.
func (s *Spool) deleteOp(why string) opFunc {
	return func(txn *wtxn, id string, rec *msgRecord, now time.Time) (int, []Event, error) {
		n, err := s.eachOpen(txn, id, rec, func(i uint32, r *Recipient) (bool, error) {
			if rec.Held {
				return false, nil // no schedule key to delete
			}
			return false, txn.Delete(schedKey(rec.Priority, dueNanos(r.NextAttempt), id, i))
		})
		if err != nil {
			return 0, nil, err
		}
		ev := Event{At: now, Kind: EventDeleted, Rcpt: -1, Text: why + ": " + rcpts(n) + " not delivered"}
		if err := s.noticeMessage(txn, NoticeDeleted, id, rec, ev); err != nil {
			return 0, nil, err
		}
		// Deleting is rare: look for every stored event rather than work
		// out whether there are any beyond "received".
		if err := s.retire(txn, id, rec, nil, true, []Event{ev}); err != nil {
			return 0, nil, err
		}
		return n, nil, errRetired
	}
}

// errRetired tells operate that fn deleted the message: the envelope is
// not to be written back.
var errRetired = errors.New("retired")

// AddEvent appends ev to the history of message id (an operator's bounce
// notes itself before the queue records the failures).
func (s *Spool) AddEvent(id string, ev Event) error {
	_, err := s.operate("add event", id, false, func(txn *wtxn, id string, rec *msgRecord, now time.Time) (int, []Event, error) {
		if ev.At.IsZero() {
			ev.At = now
		}
		return 0, []Event{ev}, nil
	})
	return err
}

// operate runs fn on message id in one read-write transaction, retried on
// a conflict with a concurrent Record, then waits until it is durable, so
// that what the operator is told has happened survives a crash. fn may
// change rec; operate writes it back, with the events fn returns, unless
// fn retired the message. schedules says fn writes schedule keys: the
// transaction then runs inside the floor gate (see RaiseFloor).
func (s *Spool) operate(op, id string, schedules bool, fn opFunc) (int, error) {
	if err := s.begin(); err != nil {
		return 0, fmt.Errorf("spool: %s %s: %w", op, id, err)
	}
	defer s.end()
	n, err := s.apply(op, id, schedules, fn)
	if err != nil {
		return 0, err
	}
	if err := s.waitDurable(context.Background()); err != nil {
		return 0, fmt.Errorf("spool: %s %s: %w", op, id, err)
	}
	return n, nil
}

// opFunc changes one message inside operate's transaction: it returns how
// many recipients it changed and the events to add.
type opFunc func(txn *wtxn, id string, rec *msgRecord, now time.Time) (int, []Event, error)

// apply is operate without the wait for durability; the caller holds
// begin.
func (s *Spool) apply(op, id string, schedules bool, fn opFunc) (int, error) {
	if err := s.brokenErr(); err != nil {
		return 0, fmt.Errorf("spool: %s %s: %w", op, id, err)
	}
	cid, err := canonicalID(id)
	if err != nil {
		return 0, fmt.Errorf("spool: %s %q: %w", op, id, ErrNotFound)
	}
	var n int
	for try := 0; ; try++ {
		n, err = s.operateTxn(cid, schedules, fn)
		if errors.Is(err, badger.ErrConflict) && try < maxConflictRetries {
			continue
		}
		break
	}
	if err != nil {
		return 0, fmt.Errorf("spool: %s %s: %w", op, cid, err)
	}
	return n, nil
}

func (s *Spool) operateTxn(id string, schedules bool, fn opFunc) (int, error) {
	s.fresh.drop(id)
	s.writeGate.RLock()
	defer s.writeGate.RUnlock()
	if schedules {
		defer s.floor.leave(s.floor.enter())
	}
	txn := s.newWriteTxn()
	defer txn.Discard()
	rec, err := getMsgRecord(txn, id)
	if err != nil {
		return 0, err
	}
	n, events, err := fn(txn, id, rec, s.now())
	if errors.Is(err, errRetired) {
		return n, txn.Commit()
	}
	if err != nil {
		return 0, err
	}
	if len(events) > 0 {
		rec.ExtraEvents = true
		for i := range events {
			seq, err := s.ids.next()
			if err != nil {
				return 0, err
			}
			if err := txn.Set(eventKey(id, seq), encodeEvent(&events[i])); err != nil {
				return 0, err
			}
		}
	}
	// Written back even when unchanged: the write makes a concurrent
	// Record, which reads m/, conflict and see the new state.
	if err := txn.Set(msgKey(id), encodeMessage(rec)); err != nil {
		return 0, err
	}
	return n, txn.Commit()
}

// eachOpen calls fn for each recipient of the message that is still
// pending or deferred, and writes back those for which fn returns true
// (fn changed them). It returns how many recipients it visited.
func (s *Spool) eachOpen(txn *wtxn, id string, rec *msgRecord, fn func(n uint32, r *Recipient) (bool, error)) (int, error) {
	count := 0
	for i := 0; i < rec.NRcpt; i++ {
		n := uint32(i)
		r, err := getRcpt(txn, id, n)
		if err != nil {
			return 0, err
		}
		if r.Status == StatusDelivered || r.Status == StatusFailed {
			continue
		}
		count++
		changed, err := fn(n, &r)
		if err != nil {
			return 0, err
		}
		if !changed {
			continue
		}
		enc, err := encodeRcpt(&r)
		if err != nil {
			return 0, err
		}
		if err := txn.Set(rcptKey(id, n), enc); err != nil {
			return 0, err
		}
	}
	return count, nil
}

// Stats counts the queue in one pass over a consistent snapshot.
type Stats struct {
	Messages int            // queued messages
	Held     int            // of which held
	ByStatus map[Status]int // recipients by status (final ones of partly delivered messages included)
	// ByHop counts pending and deferred recipients by next hop, when
	// Stats was given a hop function.
	ByHop    map[string]int
	Oldest   time.Time // acceptance time of the oldest queued message; zero when empty
	OldestID string
}

// Stats counts the queued messages and their recipients. hop, when not
// nil, names the next hop of a forward path (the spool itself makes no
// routing decision); recipients still to be delivered are counted by it.
// It reads the whole queue: it is for operators and metrics scrapes, not
// for the delivery path.
func (s *Spool) Stats(hop func(to string) string) (*Stats, error) {
	st := &Stats{ByStatus: map[Status]int{}}
	if hop != nil {
		st.ByHop = map[string]int{}
	}
	err := s.List(func(m *Message) error {
		st.Messages++
		if m.Held {
			st.Held++
		}
		if st.Oldest.IsZero() || m.Received.Before(st.Oldest) {
			st.Oldest, st.OldestID = m.Received, m.ID
		}
		for _, r := range m.Recipients {
			st.ByStatus[r.Status]++
			if hop != nil && (r.Status == StatusPending || r.Status == StatusDeferred) {
				st.ByHop[hop(r.To)]++
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: stats: %w", err)
	}
	return st, nil
}

// DiskSize returns the bytes the spool's files take on disk (Badger's
// tables, logs and value-log files, as allocated). Badger's own size counters are
// metrics-only, which the spool turns off.
func (s *Spool) DiskSize() (int64, error) {
	var total int64
	err := filepath.WalkDir(s.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed by compaction meanwhile
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		// Allocated blocks, not the length: Badger preallocates its
		// value log and memtable files, which stay mostly sparse.
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("spool: disk size: %w", err)
	}
	return total, nil
}

// rcpts says "1 recipient" or "n recipients", for event texts.
func rcpts(n int) string {
	if n == 1 {
		return "1 recipient"
	}
	return fmt.Sprintf("%d recipients", n)
}
