package spool

import (
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Get returns the envelope and recipients of message id. It returns an
// error wrapping ErrNotFound when there is no such message.
func (s *Spool) Get(id string) (*Message, error) {
	if err := s.begin(); err != nil {
		return nil, fmt.Errorf("spool: get %s: %w", id, err)
	}
	defer s.end()
	cid, err := canonicalID(id)
	if err != nil {
		return nil, fmt.Errorf("spool: get %q: %w", id, ErrNotFound)
	}
	if m, ok := s.fresh.message(cid); ok {
		return m, nil
	}
	var m *Message
	err = s.db.View(func(txn *badger.Txn) error {
		rec, err := getMsgRecord(txn, cid)
		if err != nil {
			return err
		}
		if rec.NRcpt > getByKeyLimit {
			it := txn.NewIterator(rcptIterOptions(rcptPrefix(cid), rec.NRcpt))
			defer it.Close()
			m, err = readMessage(it, cid, rec)
			return err
		}
		m = &Message{ID: cid, Envelope: rec.Envelope, Size: rec.Size, Recipients: make([]Recipient, rec.NRcpt)}
		for n := range m.Recipients {
			if m.Recipients[n], err = getRcpt(txn, cid, uint32(n)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: get %s: %w", cid, err)
	}
	return m, nil
}

// getByKeyLimit: up to this many recipients are read with one Get each; a
// Badger iterator costs more to set up than a handful of Gets.
const getByKeyLimit = 32

// getRcpt reads recipient n of message id.
func getRcpt(txn getter, id string, n uint32) (Recipient, error) {
	item, err := txn.Get(rcptKey(id, n))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Recipient{}, fmt.Errorf("%w: recipient %d missing", errCorrupt, n)
	}
	if err != nil {
		return Recipient{}, err
	}
	var r Recipient
	err = item.Value(func(v []byte) error {
		r, err = decodeRcpt(v)
		return err
	})
	if err != nil {
		return Recipient{}, fmt.Errorf("recipient %d: %w", n, err)
	}
	return r, nil
}

// Body returns the body of message id in memory, exactly as stored. The
// caller must not change it: it may be the very slice Enqueue was given.
// A filed body is read whole: delivery and the like use OpenBody.
func (s *Spool) Body(id string) ([]byte, error) {
	b, err := s.OpenBody(id)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	body, err := b.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("spool: body %s: %w", id, err)
	}
	return body, nil
}

// OpenBody returns the body of message id, to read with Body.NewReader
// whatever its size. Close it when done; a body opened before its
// message retires stays readable until then.
func (s *Spool) OpenBody(id string) (*Body, error) {
	if err := s.begin(); err != nil {
		return nil, fmt.Errorf("spool: body %s: %w", id, err)
	}
	defer s.end()
	cid, err := canonicalID(id)
	if err != nil {
		return nil, fmt.Errorf("spool: body %q: %w", id, ErrNotFound)
	}
	if body, ok := s.fresh.body(cid); ok {
		return &Body{head: body, size: int64(len(body))}, nil
	}
	var b *Body
	err = s.db.View(func(txn *badger.Txn) error {
		rec, err := getMsgRecord(txn, cid)
		if err != nil {
			return err
		}
		b, err = s.readBody(txn, cid, rec)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("spool: body %s: %w", cid, err)
	}
	return b, nil
}

// readBody opens the body of a message inside txn.
func (s *Spool) readBody(txn getter, id string, rec *msgRecord) (*Body, error) {
	if rec.BodyFile {
		return s.openBodyFile(txn, id, rec)
	}
	body, err := readChunks(txn, id, rec)
	if err != nil {
		return nil, err
	}
	return &Body{head: body, size: int64(len(body))}, nil
}

// chunkCount is the number of b/ keys of a message.
func chunkCount(rec *msgRecord) int {
	switch {
	case rec.BodyFile && rec.HeadSize > 0:
		return 1
	case rec.BodyFile, rec.Size == 0:
		return 0
	}
	return int((rec.Size + int64(rec.ChunkSize) - 1) / int64(rec.ChunkSize))
}

// readChunks concatenates the body chunks of an inline body inside txn.
func readChunks(txn getter, id string, rec *msgRecord) ([]byte, error) {
	body := make([]byte, 0, rec.Size)
	for n := 0; n < chunkCount(rec); n++ {
		item, err := txn.Get(chunkKey(id, uint32(n)))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w: body chunk %d missing", errCorrupt, n)
		}
		if err != nil {
			return nil, err
		}
		if err := item.Value(func(v []byte) error {
			body = append(body, v...)
			return nil
		}); err != nil {
			return nil, err
		}
	}
	if int64(len(body)) != rec.Size {
		return nil, fmt.Errorf("%w: body is %d bytes, envelope says %d", errCorrupt, len(body), rec.Size)
	}
	return body, nil
}

// List calls fn for every queued message in ID (that is, acceptance)
// order, from one consistent snapshot. It stops at and returns the first
// error fn returns. fn may call other Spool methods.
func (s *Spool) List(fn func(*Message) error) error {
	if err := s.begin(); err != nil {
		return fmt.Errorf("spool: list: %w", err)
	}
	defer s.end()
	var fnErr error
	err := s.db.View(func(txn *badger.Txn) error {
		mit := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixMessage), PrefetchValues: true, PrefetchSize: 16})
		defer mit.Close()
		rit := txn.NewIterator(rcptIterOptions([]byte(prefixRcpt), 16))
		defer rit.Close()
		for mit.Rewind(); mit.Valid(); mit.Next() {
			item := mit.Item()
			id := string(item.Key()[len(prefixMessage):])
			var rec *msgRecord
			err := item.Value(func(v []byte) error {
				var err error
				rec, err = decodeMessage(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("message %s: %w", id, err)
			}
			m, err := readMessage(rit, id, rec)
			if err != nil {
				return fmt.Errorf("message %s: %w", id, err)
			}
			if err := fn(m); err != nil {
				fnErr = err
				return err
			}
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("spool: list: %w", err)
	}
	return nil
}

// Due returns up to limit schedule entries with a due time at or before
// now, earliest first. It seeks the start of the t/ index and reads only
// the entries it returns (plus one), so it costs O(log N + limit) whatever
// the queue length. limit must be positive.
func (s *Spool) Due(now time.Time, limit int) ([]Due, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("spool: due: limit %d must be positive", limit)
	}
	if err := s.begin(); err != nil {
		return nil, fmt.Errorf("spool: due: %w", err)
	}
	defer s.end()
	bound := dueNanos(now)
	var out []Due
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixSchedule)})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(out) < limit; it.Next() {
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

// NextDue returns the earliest due time in the schedule index, and false
// when the index is empty.
func (s *Spool) NextDue() (time.Time, bool, error) {
	if err := s.begin(); err != nil {
		return time.Time{}, false, fmt.Errorf("spool: next due: %w", err)
	}
	defer s.end()
	var (
		at time.Time
		ok bool
	)
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixSchedule)})
		defer it.Close()
		it.Rewind()
		if !it.Valid() {
			return nil
		}
		d, err := parseSchedKey(it.Item().Key())
		if err != nil {
			return err
		}
		at, ok = d.At, true
		return nil
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("spool: next due: %w", err)
	}
	return at, ok, nil
}

// Events returns the history of message id, oldest first. The history may
// outlive the message itself; an unknown ID yields an empty history.
func (s *Spool) Events(id string) ([]Event, error) {
	if err := s.begin(); err != nil {
		return nil, fmt.Errorf("spool: events %s: %w", id, err)
	}
	defer s.end()
	cid, err := canonicalID(id)
	if err != nil {
		return nil, fmt.Errorf("spool: events %q: %w", id, ErrNotFound)
	}
	var out []Event
	err = s.db.View(func(txn *badger.Txn) error {
		switch rec, err := getMsgRecord(txn, cid); {
		case err == nil && rec.InlineReceived:
			out = append(out, receivedEvent(rec))
		case err != nil && !errors.Is(err, ErrNotFound):
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: eventPrefix(cid), PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			err := it.Item().Value(func(v []byte) error {
				ev, err := decodeEvent(v)
				out = append(out, ev)
				return err
			})
			if err != nil {
				return fmt.Errorf("event %x: %w", it.Item().Key(), err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: events %s: %w", cid, err)
	}
	return out, nil
}

func getMsgRecord(txn getter, id string) (*msgRecord, error) {
	item, err := txn.Get(msgKey(id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	var rec *msgRecord
	err = item.Value(func(v []byte) error {
		rec, err = decodeMessage(v)
		return err
	})
	return rec, err
}

func rcptIterOptions(prefix []byte, n int) badger.IteratorOptions {
	return badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: max(1, min(n, 100))}
}

// readMessage assembles a Message from its record and the recipients found
// by seeking it to r/<id>/.
func readMessage(it *badger.Iterator, id string, rec *msgRecord) (*Message, error) {
	m := &Message{ID: id, Envelope: rec.Envelope, Size: rec.Size, Recipients: make([]Recipient, rec.NRcpt)}
	prefix := rcptPrefix(id)
	seen := 0
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		n, err := parseRcptKey(item.Key(), id)
		if err != nil {
			return nil, err
		}
		if int64(n) >= int64(rec.NRcpt) {
			return nil, fmt.Errorf("%w: recipient %d of %d", errCorrupt, n, rec.NRcpt)
		}
		err = item.Value(func(v []byte) error {
			m.Recipients[n], err = decodeRcpt(v)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("recipient %d: %w", n, err)
		}
		seen++
	}
	if seen != rec.NRcpt {
		return nil, fmt.Errorf("%w: %d recipient records, envelope says %d", errCorrupt, seen, rec.NRcpt)
	}
	return m, nil
}
