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
// same transaction. Record returns after the transaction is durable.
func (s *Spool) Record(ctx context.Context, id string, results []Result) error {
	if err := s.begin(); err != nil {
		return fmt.Errorf("spool: record %s: %w", id, err)
	}
	defer s.end()
	if err := s.brokenErr(); err != nil {
		return fmt.Errorf("spool: record %s: %w", id, err)
	}
	for _, r := range results {
		switch r.Status {
		case StatusDelivered, StatusFailed, StatusDeferred:
		default:
			return fmt.Errorf("spool: record %s: recipient %d: status %q is no outcome", id, r.Rcpt, r.Status)
		}
	}
	for try := 0; ; try++ {
		if s.group != nil {
			s.group.enter()
		}
		err := s.recordTxn(id, results)
		if err != nil {
			if s.group != nil {
				s.group.leave()
			}
			if errors.Is(err, badger.ErrConflict) && try < maxConflictRetries {
				continue
			}
			return fmt.Errorf("spool: record %s: %w", id, err)
		}
		break
	}
	if err := s.waitCommitted(ctx); err != nil {
		return fmt.Errorf("spool: record %s: %w", id, err)
	}
	return nil
}

func (s *Spool) recordTxn(id string, results []Result) error {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	rec, err := getMsgRecord(txn, id)
	if err != nil {
		return err
	}
	now := s.now()
	var body []byte // read once, only when a mailbox needs it
	for _, res := range results {
		if res.Rcpt < 0 || res.Rcpt >= rec.NRcpt {
			return fmt.Errorf("recipient %d of %d", res.Rcpt, rec.NRcpt)
		}
		n := uint32(res.Rcpt)
		item, err := txn.Get(rcptKey(id, n))
		if err != nil {
			return fmt.Errorf("recipient %d: %w", n, err)
		}
		val, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		r, err := decodeRcpt(val)
		if err != nil {
			return fmt.Errorf("recipient %d: %w", n, err)
		}
		if r.Status == StatusDelivered || r.Status == StatusFailed {
			continue // already final: a duplicate report changes nothing
		}
		if err := txn.Delete(schedKey(dueNanos(r.NextAttempt), id, n)); err != nil {
			return err
		}
		r.Status, r.LastReply = res.Status, res.Reply
		r.Attempts++
		if res.Status == StatusDeferred {
			due := dueNanos(res.NextAttempt)
			r.NextAttempt = time.Unix(0, int64(due))
			if !rec.Held {
				if err := txn.Set(schedKey(due, id, n), []byte{}); err != nil {
					return err
				}
			}
		}
		enc, err := encodeRcpt(&r)
		if err != nil {
			return err
		}
		if err := txn.Set(rcptKey(id, n), enc); err != nil {
			return err
		}
		if res.Mailbox != "" && res.Status == StatusDelivered {
			if body == nil {
				if body, err = readBody(txn, id, rec); err != nil {
					return err
				}
			}
			if err := s.putMailbox(txn, res.Mailbox, res.MailboxHeader, body); err != nil {
				return err
			}
		}
		seq, err := s.ids.next()
		if err != nil {
			return err
		}
		text := res.Reply
		if res.Remote != "" {
			text = "relay=" + res.Remote + " " + text
		}
		if res.Status == StatusDeferred {
			text += " (next attempt " + r.NextAttempt.UTC().Format(time.RFC3339) + ")"
		}
		ev := Event{At: now, Kind: string(res.Status), Rcpt: int(n), Text: text}
		if err := txn.Set(eventKey(id, seq), encodeEvent(&ev)); err != nil {
			return err
		}
	}
	done, err := allFinal(txn, id)
	if err != nil {
		return err
	}
	if done {
		if err := deletePrefix(txn, msgKey(id)); err != nil {
			return err
		}
		for _, p := range [][]byte{chunkPrefix(id), rcptPrefix(id), eventPrefix(id)} {
			if err := deletePrefix(txn, p); err != nil {
				return err
			}
		}
	}
	return txn.Commit()
}

// allFinal reports whether every recipient of id is delivered or failed.
func allFinal(txn *badger.Txn, id string) (bool, error) {
	p := rcptPrefix(id)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: true, PrefetchSize: 16})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		val, err := it.Item().ValueCopy(nil)
		if err != nil {
			return false, err
		}
		r, err := decodeRcpt(val)
		if err != nil {
			return false, err
		}
		if r.Status == StatusPending || r.Status == StatusDeferred {
			return false, nil
		}
	}
	return true, nil
}

// deletePrefix deletes every key that starts with p (a single key when p
// is a whole key).
func deletePrefix(txn *badger.Txn, p []byte) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
	var keys [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	it.Close()
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// chunkPrefix is the common prefix of the body chunks of id.
func chunkPrefix(id string) []byte {
	return append(append([]byte(prefixBody), id...), '/')
}

// readBody concatenates the body chunks of a message inside txn.
func readBody(txn *badger.Txn, id string, rec *msgRecord) ([]byte, error) {
	body := make([]byte, 0, rec.Size)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: chunkPrefix(id), PrefetchValues: true, PrefetchSize: 4})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return nil, err
		}
		body = append(body, v...)
	}
	if int64(len(body)) != rec.Size {
		return nil, fmt.Errorf("%w: body of %s has %d bytes, want %d", errCorrupt, id, len(body), rec.Size)
	}
	return body, nil
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
	start := append(schedKey(dueNanos(after.At), after.ID, uint32(after.Rcpt)), 0)
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

func (s *Spool) putMailbox(txn *badger.Txn, user string, hdr, body []byte) error {
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

// Mailbox lists the messages in user's mailbox, oldest first.
func (s *Spool) Mailbox(user string) ([]MailboxEntry, error) {
	if err := s.begin(); err != nil {
		return nil, fmt.Errorf("spool: mailbox %s: %w", user, err)
	}
	defer s.end()
	p := mailboxPrefix(user)
	var out []MailboxEntry
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != len(p)+8 {
				return fmt.Errorf("%w: mailbox key %q", errCorrupt, k)
			}
			out = append(out, MailboxEntry{Seq: binary.BigEndian.Uint64(k[len(p):]), Size: it.Item().ValueSize()})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: mailbox %s: %w", user, err)
	}
	return out, nil
}

// MailboxMessage returns one message of user's mailbox.
func (s *Spool) MailboxMessage(user string, seq uint64) ([]byte, error) {
	if err := s.begin(); err != nil {
		return nil, fmt.Errorf("spool: mailbox %s: %w", user, err)
	}
	defer s.end()
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(mailboxKey(user, seq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("spool: mailbox %s message %d: %w", user, seq, err)
	}
	return v, nil
}
