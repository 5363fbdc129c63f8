package queue

import (
	"strings"
	"time"

	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/spool"
)

// deadlineOf returns the RFC 2852 delivery deadline of m (its arrival here
// plus the by-time it arrived with) and the by-mode; mode is "" when the
// message has no BY parameter. The deadline is computed from the stored
// envelope every time instead of being stored, so that the spool needs no
// new field and a restart keeps it.
func deadlineOf(m *spool.Message) (time.Time, envelope.ByMode) {
	if !strings.Contains(m.MailParams, "BY=") {
		// The common case, without a parse: stored parameters are in
		// the canonical form of MailParams.String.
		return time.Time{}, ""
	}
	p, err := envelope.ParseMailParams(strings.TrimSpace(m.MailParams))
	if err != nil || p.ByMode == "" {
		return time.Time{}, ""
	}
	return m.Received.Add(time.Duration(p.ByTime) * time.Second), p.ByMode
}

// missedDeadline fails recipient n of a BY=…;R message whose deadline has
// passed (RFC 2852 §4.2: the message is returned, not delivered late),
// keeping last, the last reply it got.
func missedDeadline(m *spool.Message, n int, now time.Time, last string) (spool.Result, bool) {
	deadline, mode := deadlineOf(m)
	if mode != envelope.ByReturn || now.Before(deadline) {
		return spool.Result{}, false
	}
	reply := "554 5.4.7 Delivery time expired: not delivered by the deadline the sender set with BY (" + deadline.UTC().Format(time.RFC3339) + ")"
	if last != "" {
		reply += "; last reply: " + last
	}
	return spool.Result{Rcpt: n, Status: spool.StatusFailed, Reply: reply}, true
}

// byNext moves the next attempt of a deferred recipient forward to its BY
// deadline when backoff would pass it: with R the recipient then fails at
// the deadline, with N the delay DSN goes out at the deadline.
func byNext(m *spool.Message, now, next time.Time) time.Time {
	if deadline, mode := deadlineOf(m); mode != "" && now.Before(deadline) && next.After(deadline) {
		return deadline
	}
	return next
}

// byNotifyDue reports whether a deferred recipient of a BY=…;N message has
// reached its deadline, which owes the sender a delay DSN (RFC 2852 §4.2).
func byNotifyDue(m *spool.Message, now time.Time) bool {
	deadline, mode := deadlineOf(m)
	return mode == envelope.ByNotify && !now.Before(deadline)
}
