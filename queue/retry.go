package queue

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// RetryPolicy is the exponential backoff of docs/design.md §6.
type RetryPolicy struct {
	Min      time.Duration // delay after the first failed attempt
	Max      time.Duration // cap on the delay
	Lifetime time.Duration // after this age a deferred recipient fails
}

// Delay returns the wait after the given number of failed attempts
// (1 for the first), before jitter: Min·2^(attempts-1), at most Max.
func (p RetryPolicy) Delay(attempts int) time.Duration {
	d := p.Min
	for i := 1; i < attempts && d < p.Max; i++ {
		d *= 2
	}
	return min(d, p.Max)
}

// jitter spreads d by ±10% using r in [0,1), so that retries of many
// messages deferred together do not arrive together.
func jitter(d time.Duration, r float64) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*r))
}

// outcome classifies a reply code: docs/design.md §7.
type outcome int

const (
	delivered outcome = iota
	deferred
	failed
)

func classify(code int) outcome {
	switch {
	case code >= 200 && code < 300:
		return delivered
	case code >= 500 && code < 600:
		return failed
	}
	return deferred // 4xx, and anything unexpected: never lose mail on a surprise
}

// errorText renders an error that stands in for a remote reply (a refused
// connection, a timeout, a DNS failure) the way replies are recorded.
func errorText(err error) string {
	var pe *PermanentError
	if asPermanent(err, &pe) {
		return strconv.Itoa(pe.Code) + " " + oneLine(pe.Err.Error())
	}
	var te *TemporaryError
	if errors.As(err, &te) && te.Code/100 == 4 {
		return strconv.Itoa(te.Code) + " " + oneLine(te.Err.Error())
	}
	return "451 4.4.1 " + oneLine(err.Error())
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// replyText formats a Reply for the event log when its Text is empty.
func replyText(r Reply) string {
	if r.Text != "" {
		return oneLine(r.Text)
	}
	return fmt.Sprintf("%d", r.Code)
}
