package spool

import (
	"context"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// prefixHandoff keys remember recipients handed over by a previous relay:
// d/<token>/<forward path> -> message ID, with a Badger TTL.
const prefixHandoff = "d/"

func handoffKey(token, rcpt string) []byte {
	k := make([]byte, 0, len(prefixHandoff)+len(token)+1+len(rcpt))
	k = append(k, prefixHandoff...)
	k = append(k, token...)
	k = append(k, '/')
	return append(k, rcpt...)
}

// EnqueueOnce is EnqueueID for a message handed over by a relay that names
// it with token (its hop token): recipients already stored under the same
// token, or under env.Handoff (its origin token, when it has one), within
// ttl are left out, and the rest are stored together with their token keys in
// one transaction. When every recipient was stored before, nothing is
// written and the earlier message's ID is returned, so the sender's retry
// after a lost 250 gets its 250 without a second copy.
func (s *Spool) EnqueueOnce(ctx context.Context, id, token string, ttl time.Duration, env Envelope, rcpts []Recipient, body []byte) (string, error) {
	if id == "" {
		return "", errors.New("spool: enqueue: empty message ID")
	}
	stored, _, err := s.enqueueOnce(ctx, id, token, ttl, env, rcpts, inline(body))
	return stored, err
}

// enqueueOnce is EnqueueOnce for any content; committed says whether a
// transaction storing the message committed (even when the sync that
// followed failed).
func (s *Spool) enqueueOnce(ctx context.Context, id, token string, ttl time.Duration, env Envelope, rcpts []Recipient, c content) (string, bool, error) {
	if token == "" {
		return s.enqueue(ctx, id, env, rcpts, c)
	}
	if err := s.begin(); err != nil {
		return "", false, fmt.Errorf("spool: enqueue: %w", err)
	}
	defer s.end()
	if err := checkNew(env, rcpts); err != nil {
		return "", false, err
	}
	if err := s.brokenErr(); err != nil {
		return "", false, fmt.Errorf("spool: enqueue: %w", err)
	}
	if _, err := parseID(id); err != nil {
		return "", false, fmt.Errorf("spool: enqueue %q: %w", id, err)
	}
	now := s.now()
	if env.Received.IsZero() {
		env.Received = now
	}
	if s.group != nil {
		s.group.enter()
	}
	prev, err := s.commitOnce(id, token, ttl, now, &env, rcpts, c)
	if err != nil {
		if s.group != nil {
			s.group.leave()
		}
		return "", false, fmt.Errorf("spool: enqueue %s: %w", id, err)
	}
	// Also when nothing was written: the earlier copy may still be waiting
	// for its sync, and the 250 must not overtake it.
	if err := s.waitCommitted(ctx); err != nil {
		return "", prev == "", fmt.Errorf("spool: enqueue %s: %w", id, err)
	}
	if prev != "" {
		return prev, false, nil
	}
	return id, true, nil
}

// commitOnce returns the earlier message ID when every recipient is a
// repeat, "" when it stored a message.
func (s *Spool) commitOnce(id string, token string, ttl time.Duration, now time.Time, env *Envelope, rcpts []Recipient, c content) (string, error) {
	s.writeGate.RLock()
	defer s.writeGate.RUnlock()
	defer s.floor.leave(s.floor.enter())
	txn := s.newWriteTxn()
	defer txn.Discard()
	tokens := []string{token}
	if env.Handoff != "" && env.Handoff != token {
		tokens = append(tokens, env.Handoff)
	}
	var fresh []Recipient
	prev := ""
	for _, r := range rcpts {
		seen, err := seenUnder(txn, tokens, r.To)
		if err != nil {
			return "", err
		}
		if seen == "" {
			fresh = append(fresh, r)
		} else if prev == "" {
			prev = seen
		}
	}
	if len(fresh) == 0 {
		return prev, nil
	}
	s.fresh.reserve(id)
	m, err := putMessage(txn, id, s.floor.at(now), env, fresh, c)
	for i := 0; err == nil && i < len(fresh); i++ {
		for _, tok := range tokens {
			if err == nil {
				err = txn.SetEntry(badger.NewEntry(handoffKey(tok, fresh[i].To), []byte(id)).WithTTL(ttl))
			}
		}
	}
	if err == nil {
		err = s.noticeReceived(txn, id, env, fresh)
	}
	if err == nil {
		err = txn.Commit()
	}
	if err != nil {
		s.fresh.drop(id)
		return "", err
	}
	s.fresh.publish(m, c)
	return "", nil
}

// seenUnder returns the ID of the message that stored rcpt under one of
// tokens, "" when none did.
func seenUnder(txn *wtxn, tokens []string, rcpt string) (string, error) {
	for _, tok := range tokens {
		item, err := txn.Get(handoffKey(tok, rcpt))
		if errors.Is(err, badger.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return "", err
		}
		b, err := item.ValueCopy(nil)
		return string(b), err
	}
	return "", nil
}
