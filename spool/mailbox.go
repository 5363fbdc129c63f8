package spool

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

// Reading and removing local mailbox entries (x/<user>/<seq>), for the
// POP3 server. Entries are written by Record on local delivery (putMailbox
// in record.go).

// ListMailbox lists the messages in user's mailbox, oldest first, like
// Mailbox, but with each Size exact to the octet: POP3 reports sizes that
// clients compare with what they receive. (Badger only estimates the size
// of a value kept in its value log, which is where bodies over 64 KiB go;
// reading the length costs no copy, since such values are read from a
// memory map and this iterator does not prefetch.)
func (s *Spool) ListMailbox(user string) ([]MailboxEntry, error) {
	if err := checkMailboxName(user); err != nil {
		return nil, fmt.Errorf("spool: mailbox: %w", err)
	}
	if err := s.begin(); err != nil {
		return nil, fmt.Errorf("spool: mailbox %s: %w", user, err)
	}
	defer s.end()
	p := mailboxPrefix(user)
	var out []MailboxEntry
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) != len(p)+8 {
				return fmt.Errorf("%w: mailbox key %q", errCorrupt, k)
			}
			e := MailboxEntry{Seq: binary.BigEndian.Uint64(k[len(p):])}
			if err := item.Value(func(v []byte) error { e.Size = int64(len(v)); return nil }); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: mailbox %s: %w", user, err)
	}
	return out, nil
}

// DeleteMailboxEntries removes the messages seqs from user's mailbox in one
// transaction, so that a POP3 session's deletions (RFC 1939 UPDATE state)
// happen all together or not at all, and returns once the removal is
// durable: a client told "+OK" at QUIT must not see the messages again
// after a crash. Entries that do not exist are ignored, which makes a
// repeated call harmless.
func (s *Spool) DeleteMailboxEntries(ctx context.Context, user string, seqs []uint64) error {
	if err := checkMailboxName(user); err != nil {
		return fmt.Errorf("spool: delete from mailbox: %w", err)
	}
	if len(seqs) == 0 {
		return nil
	}
	if err := s.begin(); err != nil {
		return fmt.Errorf("spool: delete from mailbox %s: %w", user, err)
	}
	defer s.end()
	if err := s.brokenErr(); err != nil {
		return fmt.Errorf("spool: delete from mailbox %s: %w", user, err)
	}
	s.writeGate.RLock()
	defer s.writeGate.RUnlock()
	err := s.update(func(txn *wtxn) error {
		for _, seq := range seqs {
			if err := txn.Delete(mailboxKey(user, seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool: delete %d messages from mailbox %s: %w", len(seqs), user, err)
	}
	if err := s.waitDurable(ctx); err != nil {
		return fmt.Errorf("spool: delete from mailbox %s: %w", user, err)
	}
	return nil
}

// checkMailboxName refuses names that would make a key outside the
// mailbox's own x/<user>/ range.
func checkMailboxName(user string) error {
	if user == "" || strings.IndexByte(user, '/') >= 0 {
		return fmt.Errorf("bad mailbox name %q", user)
	}
	return nil
}
