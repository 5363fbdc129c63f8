package spool

import (
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// prefixHistory keys hold the summaries of retired messages:
// h/<id> -> retiredRecord, with a Badger TTL of Options.History.
const prefixHistory = "h/"

func historyKey(id string) []byte {
	return append([]byte(prefixHistory), id...)
}

// Retired is what the spool keeps of a message after it left the queue
// (delivered, bounced or deleted), for `relay queue show` within the
// history window: the envelope, every recipient in its final state with
// its last reply, and the whole event history, final outcomes included.
// The body is not kept.
type Retired struct {
	Message           // envelope, size and recipients as they were at the end
	At      time.Time // when the message left the queue
	Events  []Event   // oldest first
}

// retiredRecord is the value of h/<id>: a time, then the message record,
// recipients and events, each in its own encoding (codec.go), so the
// summary needs no format of its own beyond the counts.
func encodeRetired(at time.Time, rec *msgRecord, rcpts []Recipient, events []Event) ([]byte, error) {
	e := newEncoder(256)
	e.time(at)
	e.str(string(encodeMessage(rec)))
	e.uvarint(uint64(len(rcpts)))
	for i := range rcpts {
		b, err := encodeRcpt(&rcpts[i])
		if err != nil {
			return nil, err
		}
		e.str(string(b))
	}
	e.uvarint(uint64(len(events)))
	for i := range events {
		e.str(string(encodeEvent(&events[i])))
	}
	return e.b, nil
}

func decodeRetired(id string, b []byte) (*Retired, error) {
	d := newDecoder(b)
	at := d.time("retired at")
	mb := d.str("message")
	n := d.uvarint("recipient count")
	if d.err != nil {
		return nil, d.err
	}
	rec, err := decodeMessage([]byte(mb))
	if err != nil {
		return nil, err
	}
	if n > uint64(len(d.b)) { // every recipient takes at least one byte
		return nil, fmt.Errorf("%w: recipient count %d", errCorrupt, n)
	}
	r := &Retired{At: at, Message: Message{ID: id, Envelope: rec.Envelope, Size: rec.Size}}
	for i := uint64(0); i < n; i++ {
		rb := d.str("recipient")
		if d.err != nil {
			return nil, d.err
		}
		rc, err := decodeRcpt([]byte(rb))
		if err != nil {
			return nil, fmt.Errorf("recipient %d: %w", i, err)
		}
		r.Recipients = append(r.Recipients, rc)
	}
	ne := d.uvarint("event count")
	if d.err == nil && ne > uint64(len(d.b)) {
		return nil, fmt.Errorf("%w: event count %d", errCorrupt, ne)
	}
	for i := uint64(0); i < ne && d.err == nil; i++ {
		eb := d.str("event")
		if d.err != nil {
			break
		}
		ev, err := decodeEvent([]byte(eb))
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		r.Events = append(r.Events, ev)
	}
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

// keepHistory writes the summary of a retiring message into txn, before
// retire deletes its keys: the recipients as this transaction leaves them
// (rcpts, or read from txn when nil), the stored events, and final, the
// events of this transaction that are never stored under e/. It does
// nothing when the history window is 0.
//
// Reading the events costs nothing for a message that never had more than
// its "received" event (one Get for one stored before InlineReceived),
// and an iterator otherwise, as in retire.
func (s *Spool) keepHistory(txn *wtxn, id string, rec *msgRecord, rcpts []Recipient, moreEvents bool, final []Event) error {
	if s.history <= 0 {
		return nil
	}
	if rcpts == nil {
		rcpts = make([]Recipient, rec.NRcpt)
		for n := range rcpts {
			r, err := getRcpt(txn, id, uint32(n))
			if err != nil {
				return err
			}
			rcpts[n] = r
		}
	}
	var events []Event
	if rec.InlineReceived {
		events = append(events, receivedEvent(rec))
	}
	if moreEvents {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: eventPrefix(id), PrefetchValues: true, PrefetchSize: 16})
		for it.Rewind(); it.Valid(); it.Next() {
			err := it.Item().Value(func(v []byte) error {
				ev, err := decodeEvent(v)
				events = append(events, ev)
				return err
			})
			if err != nil {
				it.Close()
				return fmt.Errorf("event %x: %w", it.Item().Key(), err)
			}
		}
		it.Close()
	} else if idv, err := parseID(id); err == nil && !rec.InlineReceived {
		item, err := txn.Get(eventKey(id, idv))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			if err := item.Value(func(v []byte) error {
				ev, err := decodeEvent(v)
				events = append(events, ev)
				return err
			}); err != nil {
				return fmt.Errorf("received event: %w", err)
			}
		}
	}
	events = append(events, final...)
	v, err := encodeRetired(s.now(), rec, rcpts, events)
	if err != nil {
		return err
	}
	// Badger's TTL runs on the wall clock, not on the injectable one: it
	// decides when the summary disappears, not what it says.
	return txn.SetEntry(badger.NewEntry(historyKey(id), v).WithTTL(s.history))
}

// History returns the summary of a message that retired within the
// history window. It returns an error wrapping ErrNotFound when there is
// none: the message is still queued, never existed, or retired too long
// ago.
func (s *Spool) History(id string) (*Retired, error) {
	if err := s.begin(); err != nil {
		return nil, fmt.Errorf("spool: history %s: %w", id, err)
	}
	defer s.end()
	cid, err := canonicalID(id)
	if err != nil {
		return nil, fmt.Errorf("spool: history %q: %w", id, ErrNotFound)
	}
	var r *Retired
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(historyKey(cid))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			r, err = decodeRetired(cid, v)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("spool: history %s: %w", cid, err)
	}
	return r, nil
}
