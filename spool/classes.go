package spool

import (
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// DueClasses returns the entries due by now, from from on, of the
// priority classes above 0 (above) or below it (!above): highest class
// first, each in due order, at most limit entries. next is the earliest
// entry of those classes due after now (zero: none), so that the caller
// knows when to look again. Priority 0 is the t/ index (Due, DueAfter).
//
// One iterator, one seek per class that has keys: the classes other than
// 0 hold only the messages that asked for a priority, few against the
// rest, and a class without keys costs nothing but the seek that skips it.
func (s *Spool) DueClasses(from, now time.Time, limit int, above bool) (dues []Due, next time.Time, err error) {
	if limit <= 0 {
		return nil, time.Time{}, fmt.Errorf("spool: due classes: limit %d must be positive", limit)
	}
	if err := s.begin(); err != nil {
		return nil, time.Time{}, fmt.Errorf("spool: due classes: %w", err)
	}
	defer s.end()
	first, last := classRank(9), classRank(1)
	if !above {
		first, last = classRank(-1), classRank(-9)
	}
	bound, start := dueNanos(now), dueNanos(from)
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixClass)})
		defer it.Close()
		for rank := first; rank <= last && len(dues) < limit; {
			it.Seek(classStart(rank, start))
			if !it.Valid() {
				return nil
			}
			k := it.Item().Key()
			if len(k) <= len(prefixClass) {
				return fmt.Errorf("malformed schedule key %q", k)
			}
			if r := k[len(prefixClass)]; r != rank {
				if r > last {
					return nil
				}
				rank = r // the next class with keys
				continue
			}
			for ; it.Valid() && len(dues) < limit; it.Next() {
				d, err := parseClassKey(it.Item().Key())
				if err != nil {
					return err
				}
				if classRank(d.Priority) != rank {
					break
				}
				if dueNanos(d.At) > bound {
					if next.IsZero() || d.At.Before(next) {
						next = d.At
					}
					break
				}
				dues = append(dues, d)
			}
			rank++
		}
		return nil
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("spool: due classes: %w", err)
	}
	return dues, next, nil
}

// classStart is where the entries of class rank due at or after due begin.
func classStart(rank byte, due uint64) []byte {
	k := make([]byte, 0, len(prefixClass)+2+8)
	k = append(k, prefixClass...)
	k = append(k, rank, '/')
	for i := 7; i >= 0; i-- {
		k = append(k, byte(due>>(8*i)))
	}
	return k
}

// Expedite makes recipients rcpts of message id due now, whatever their
// backoff said, with an event saying why: the queue takes priority mail
// out of its backoff when the next hop it waited for is back. It returns
// how many were moved (those already due, final or held count as not
// moved); a message gone meanwhile is 0 and ErrNotFound.
func (s *Spool) Expedite(id string, which []int, why string) (int, error) {
	want := map[uint32]bool{}
	for _, n := range which {
		want[uint32(n)] = true
	}
	return s.operate("expedite", id, true, func(txn *wtxn, id string, rec *msgRecord, now time.Time) (int, []Event, error) {
		if rec.Held {
			return 0, nil, nil
		}
		due := s.floor.at(now)
		moved := 0
		_, err := s.eachOpen(txn, id, rec, func(i uint32, r *Recipient) (bool, error) {
			old := dueNanos(r.NextAttempt)
			if !want[i] || old <= due {
				return false, nil
			}
			if err := txn.Delete(schedKey(rec.Priority, old, id, i)); err != nil {
				return false, err
			}
			moved++
			r.NextAttempt = time.Unix(0, int64(due))
			return true, txn.Set(schedKey(rec.Priority, due, id, i), []byte{})
		})
		if err != nil || moved == 0 {
			return 0, nil, err
		}
		ev := Event{At: now, Kind: EventRetried, Rcpt: -1, Text: why + ": " + rcpts(moved) + " due now"}
		return moved, []Event{ev}, nil
	})
}
