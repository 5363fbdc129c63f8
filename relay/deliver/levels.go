package deliver

import (
	"fmt"
	"time"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/spool"
)

// levels is the level of service a message asks of its next hops: its
// MT-PRIORITY (RFC 6710) and its BY deadline (RFC 2852), which unlike the
// other MAIL parameters change from hop to hop or depend on what the hop
// offers.
type levels struct {
	priority int8
	byMode   envelope.ByMode // "" without BY
	deadline time.Time       // arrival here plus the by-time it came with
	byTrace  bool
}

// levelsOf reads the levels of msg from its stored MAIL parameters p.
func levelsOf(msg *spool.Message, p envelope.MailParams) levels {
	l := levels{priority: p.Priority}
	if p.ByMode != "" {
		l.byMode, l.byTrace = p.ByMode, p.ByTrace
		l.deadline = msg.Received.Add(time.Duration(p.ByTime) * time.Second)
	}
	return l
}

// levelParams adds to p what this session's next hop gets of l:
//
//   - MT-PRIORITY=n when the hop advertises MT-PRIORITY (RFC 6710 §4: to
//     one that does not, the message goes on without it);
//   - BY=<seconds left>;<mode> when the hop advertises DELIVERBY, the
//     by-time decremented by the time the message spent here (RFC 2852
//     §4), rounded down so that the deadline never moves later;
//   - to a hop without DELIVERBY, a BY=…;R message cannot keep its
//     deadline and is returned (refuse, a 5.4.7 reply for every
//     recipient); a BY=…;N message is relayed, and relayed reports that
//     its delivery is a "relayed" one for DSN purposes (RFC 2852 §4.3,
//     RFC 3461 §6.2.1: a notice if NOTIFY asked for SUCCESS).
func (s *clientSession) levelParams(p envelope.MailParams, l levels) (_ envelope.MailParams, refuse *queue.Reply, relayed bool) {
	if l.priority != 0 && s.ext("MT-PRIORITY") {
		p.Priority = l.priority
	}
	if l.byMode != "" {
		switch ok := s.ext("DELIVERBY"); {
		case ok:
			left := l.deadline.Sub(s.now())
			secs := int64(left / time.Second)
			if left < 0 && left%time.Second != 0 {
				secs-- // round toward the past for negative times too
			}
			if l.byMode == envelope.ByReturn && secs <= 0 {
				// RFC 2852 §4.1: a by-time of 0 or less is invalid with R;
				// the deadline has passed here.
				return p, &queue.Reply{Code: 554, Text: "554 5.4.7 Delivery time expired: the BY deadline passed before the message could be relayed"}, false
			}
			p = p.WithBy(secs)
			p.ByMode, p.ByTrace = l.byMode, l.byTrace
		case l.byMode == envelope.ByReturn:
			return p, &queue.Reply{Code: 554, Text: fmt.Sprintf("554 5.4.7 Delivery time expired: next hop %s does not support DELIVERBY, so the BY=;R deadline cannot be kept past it", s.remote)}, false
		default:
			relayed = true
		}
	}
	return p, nil, relayed
}
