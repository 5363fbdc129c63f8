package spool

import (
	"fmt"
	"time"
)

// EventTransferred is the event of recipients handed to another relay by
// `relay queue transfer` or a drain (Transferred).
const EventTransferred = "transferred"

// Transferred records that the recipients which (indexes) of message id
// were handed to another relay, whose reply was reply: they are final
// here (delivered, with reply as their last reply) and get a
// "transferred" event naming to. When no recipient is left to deliver
// the message retires in the same transaction, like a delivered one,
// without a DSN: the relay that took it owes what NOTIFY asks for. It
// returns how many recipients it changed; recipients already final are
// left alone.
func (s *Spool) Transferred(id string, which []int, to, reply string) (int, error) {
	want := make(map[uint32]bool, len(which))
	for _, n := range which {
		want[uint32(n)] = true
	}
	return s.operate("transfer", id, false, func(txn *wtxn, id string, rec *msgRecord, now time.Time) (int, []Event, error) {
		changed, open := 0, 0
		_, err := s.eachOpen(txn, id, rec, func(i uint32, r *Recipient) (bool, error) {
			if !want[i] {
				open++
				return false, nil
			}
			if !rec.Held {
				if err := txn.Delete(schedKey(rec.Priority, dueNanos(r.NextAttempt), id, i)); err != nil {
					return false, err
				}
			}
			changed++
			r.Status, r.LastReply, r.NextAttempt = StatusDelivered, reply, time.Time{}
			return true, nil
		})
		if err != nil {
			return 0, nil, err
		}
		if changed == 0 {
			return 0, nil, nil
		}
		ev := Event{At: now, Kind: EventTransferred, Rcpt: -1, Text: fmt.Sprintf("to %s: %s: %s", to, rcpts(changed), reply)}
		if open > 0 {
			return changed, []Event{ev}, nil
		}
		if err := s.retire(txn, id, rec, nil, true, []Event{ev}); err != nil {
			return 0, nil, err
		}
		return changed, nil, errRetired
	})
}
