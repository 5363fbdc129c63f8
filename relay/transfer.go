package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/relay/admin/api"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/spool"
)

// Handing queued messages to another relay (`relay queue transfer`, and
// draining a node, drain.go; design §18). Each message is claimed
// (queue.Claim: the queue dispatches no delivery of it) and held (so
// that after a crash it is not delivered here either), and taken only
// once no delivery of it is queued or in progress; then its open recipients go to the
// other relay over SMTP exactly as a delivery would send them (DSN
// parameters, MT-PRIORITY, BY with the time spent here taken off, the
// hand-off field with the message's origin), and those it accepts are
// recorded "transferred" in one transaction that retires the message
// when nothing is left. A crash between the other relay's 250 and that
// transaction leaves the message held here; transferring it again sends
// the same hand-off token, which the other relay answers with its
// earlier queue ID instead of a second copy.

// transferWorkers is how many SMTP sessions a transfer runs at once: the
// receiving relay group-commits what arrives together, and so does this
// one's hold and record. 10,000 messages on the development machine:
// about 820 msg/s with 8, 990 with 16, 1,260 with 32; 16 leaves most
// of a receiver's default 64 connections to others.
const transferWorkers = 16

// transferTimeout bounds one message's transfer (hold, wait, send, record).
const transferTimeout = 2 * time.Minute

// Transfer hands the messages ids (all queued messages with all) to the
// relay at to ("host:port"). Local-mailbox recipients stay here (the
// queue delivers them); so does a recipient the other relay refuses. It
// returns one Change per message it looked at.
func (r *Relay) Transfer(ctx context.Context, to string, ids []string, all bool) ([]api.Change, error) {
	if _, _, err := net.SplitHostPort(to); err != nil {
		return nil, fmt.Errorf("relay: transfer to %q: want host:port: %w", to, err)
	}
	if all {
		ids = nil
		if err := r.spool.List(func(m *spool.Message) error { ids = append(ids, m.ID); return nil }); err != nil {
			return nil, fmt.Errorf("relay: transfer: %w", err)
		}
	}
	run := &transferRun{hop: queue.Hop{Key: "transfer:" + to, Addrs: []string{to}, TLS: string(config.TLSOpportunistic), Source: "transfer"}}
	changes := make([]api.Change, len(ids))
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(transferWorkers, len(ids)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sess queue.Session
			defer func() {
				if sess != nil {
					sess.Close()
				}
			}()
			for i := range work {
				if err := run.failed(); err != nil {
					changes[i] = api.Change{ID: ids[i], Action: api.ActionTransfer, Result: "not transferred: " + err.Error()}
					continue
				}
				changes[i], sess = r.transferOne(ctx, run, sess, ids[i])
			}
		}()
	}
	for i := range ids {
		if ctx.Err() != nil {
			changes[i] = api.Change{ID: ids[i], Action: api.ActionTransfer, Result: "not transferred: " + ctx.Err().Error()}
			continue
		}
		work <- i
	}
	close(work)
	wg.Wait()
	return changes, nil
}

// transferRun is one Transfer: where to, and the dial error that ends
// it (the other relay is not there: the rest is not even held).
type transferRun struct {
	hop     queue.Hop
	mu      sync.Mutex
	dialErr error
}

func (t *transferRun) failed() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dialErr
}

func (t *transferRun) fail(err error) {
	t.mu.Lock()
	t.dialErr = err
	t.mu.Unlock()
}

// transferOne transfers one message over sess (dialled when nil) and
// returns the session to go on with (nil when it broke).
func (r *Relay) transferOne(ctx context.Context, run *transferRun, sess queue.Session, id string) (api.Change, queue.Session) {
	c := api.Change{ID: id, Action: api.ActionTransfer}
	ctx, cancel := context.WithTimeout(ctx, transferTimeout)
	defer cancel()
	m, err := r.spool.Get(id)
	if err != nil {
		c.Result = "not transferred: " + err.Error()
		return c, sess
	}
	// Looked at before anything is held: a message with nothing for
	// another relay is left to the queue, its schedule untouched.
	if idx, _ := r.transferable(m); len(idx) == 0 {
		c.Result = "nothing to transfer: no recipient for another relay"
		return c, sess
	}
	if sess == nil {
		if sess, err = r.deliverer.Dial(ctx, run.hop); err != nil {
			run.fail(err)
			c.Result = "not transferred: " + err.Error()
			return c, nil
		}
	}
	defer r.queue.Claim(id)()
	heldHere := false
	if !m.Held {
		if _, err := r.spool.Hold(id); err != nil {
			c.Result = "not transferred: " + err.Error()
			return c, sess
		}
		heldHere = true
	}
	// Unheld again unless it leaves: what stays is delivered here.
	defer func() {
		if heldHere {
			if _, err := r.spool.Release(id); err != nil && !errors.Is(err, spool.ErrNotFound) {
				r.log.Error("transfer: release", "id", id, "err", err)
			}
			r.queue.Notify()
		}
	}()
	for r.queue.Busy(id) {
		select {
		case <-ctx.Done():
			c.Result = "not transferred: a delivery of it is still in progress"
			return c, sess
		case <-time.After(10 * time.Millisecond):
		}
	}
	if m, err = r.spool.Get(id); err != nil { // the delivery may have finished it
		c.Result = "nothing to transfer: " + err.Error()
		return c, sess
	}
	idx, rcpts := r.transferable(m)
	if len(idx) == 0 {
		c.Result = "nothing to transfer: no recipient for another relay"
		return c, sess
	}
	body, err := r.spool.OpenBody(id)
	if err != nil {
		c.Result = "not transferred: " + err.Error()
		return c, sess
	}
	defer body.Close()
	replies, err := sess.Send(ctx, m, rcpts, body)
	if err != nil && queue.NotSent(err) {
		// The other relay closed the session while it waited (for a
		// delivery here to finish): nothing was sent; once more, anew.
		sess.Close()
		if sess, err = r.deliverer.Dial(ctx, run.hop); err != nil {
			c.Result = "not transferred: " + err.Error()
			return c, nil
		}
		replies, err = sess.Send(ctx, m, rcpts, body)
	}
	if err != nil || len(replies) != len(idx) {
		sess.Close()
		c.Result = fmt.Sprintf("not transferred: %v", err)
		if err == nil || !queue.NotSent(err) {
			// The other relay may have stored it before the session
			// broke: it stays held, for a transfer again (answered with
			// the earlier copy's ID) or a release by the operator.
			heldHere = false
			c.Result += " (held here: transfer it again, or release it)"
		}
		return c, nil
	}
	var took []int
	reply := ""
	for i, rep := range replies {
		if rep.Code/100 == 2 {
			took = append(took, idx[i])
			reply = rep.Text
		} else if c.Result == "" {
			c.Result = "refused: " + rep.Text
		}
	}
	if len(took) == 0 {
		return c, sess
	}
	n, err := r.spool.Transferred(id, took, sess.Remote(), reply)
	if err != nil {
		heldHere = false // as after a broken session: held, for a transfer again
		// The other relay has it; a second transfer is answered with its
		// earlier queue ID (the hand-off token), not a second copy.
		c.Result = "transferred, but not recorded here (held: transfer it again): " + err.Error()
		return c, sess
	}
	if _, err := r.spool.Get(id); errors.Is(err, spool.ErrNotFound) {
		heldHere = false // retired: nothing to release
	}
	c.Recipients = n
	c.Result = fmt.Sprintf("transferred to %s: %s: %s", run.hop.Addrs[0], rcptsText(n), reply)
	r.log.Info("transferred", "id", id, "to", sess.Remote(), "recipients", n, "reply", reply)
	return c, sess
}

// transferable returns the recipients of m that a transfer takes (their
// indexes) and the RCPT arguments to send for them: those still to be
// delivered, but not to local mailboxes nor what cannot be routed,
// which stay here.
func (r *Relay) transferable(m *spool.Message) (idx []int, rcpts []string) {
	for n, rc := range m.Recipients {
		if rc.Status == spool.StatusDelivered || rc.Status == spool.StatusFailed || rc.Expanded {
			continue
		}
		h, out, err := r.router.Route(rc.To)
		if err != nil || h.Local {
			continue
		}
		idx = append(idx, n)
		rcpts = append(rcpts, out+rc.Params)
	}
	return idx, rcpts
}

func rcptsText(n int) string {
	if n == 1 {
		return "1 recipient"
	}
	return fmt.Sprintf("%d recipients", n)
}
