package queue

import (
	"errors"
	"time"

	"github.com/relay-mta/relay/spool"
)

// expediteLimit bounds the priority entries one recovery looks at.
const expediteLimit = 1000

// A next hop that was down comes back. Its backlog waits out the
// backoff each recipient was given while the hop was down, so it comes
// due spread over up to retry_max, in due order; an urgent message
// deferred last would be among the last delivered. So when a lane that
// was marked down delivers again, the recipients of priority above 0
// that wait for that hop are made due at once. They are found in the
// schedule indexes of their classes (spool/doc.go), which hold only the
// messages that asked for a priority; the scheduler then reads those
// classes first, and the lane serves the highest priority first.
func (l *lane) recovered() {
	l.mu.Lock()
	was := l.wasDead
	l.wasDead = false
	l.mu.Unlock()
	if !was {
		return
	}
	q := l.q
	q.workers.Add(1)
	go func() {
		defer q.workers.Done()
		q.expedite(l.hop.Key)
	}()
}

// expedite makes the priority work waiting for the hop named key due now.
func (q *Queue) expedite(key string) {
	dues, _, err := q.o.Spool.DueClasses(time.Time{}, farFuture, expediteLimit, true)
	if err != nil {
		q.log.Error("queue: read priority schedule", "err", err)
		return
	}
	byMsg := map[string][]int{}
	var order []string
	for _, d := range dues {
		if _, ok := byMsg[d.ID]; !ok {
			order = append(order, d.ID)
		}
		byMsg[d.ID] = append(byMsg[d.ID], d.Rcpt)
	}
	moved := 0
	for _, id := range order {
		m, err := q.o.Spool.Get(id)
		if err != nil {
			continue // retired meanwhile
		}
		var mine []int
		for _, n := range byMsg[id] {
			if n >= len(m.Recipients) {
				continue
			}
			if hop, _, err := q.o.Router.Route(m.Recipients[n].To); err == nil && hop.Key == key {
				mine = append(mine, n)
			}
		}
		if len(mine) == 0 {
			continue
		}
		n, err := q.o.Spool.Expedite(id, mine, "next hop "+key+" is back, priority mail")
		if err != nil && !errors.Is(err, spool.ErrNotFound) {
			q.log.Error("queue: expedite", "id", id, "err", err)
			continue
		}
		moved += n
	}
	if moved > 0 {
		q.log.Info("queue: next hop back, priority mail due now", "hop", key, "recipients", moved)
		q.Notify()
	}
}
