package spool

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

// Reading and removing local mailbox entries (x/<user>/<seq>), for the
// POP3 server. Entries are written by Record on local delivery (putMailbox
// in record.go, putMailboxFiled here).
//
// The value of an entry is the whole message (our Return-Path and
// Delivered-To, then the message as queued), or, for a message whose
// body is a file, filedMark, the length of the file, and the fields and
// head in front of it: the file itself is a hard link mail/<seq> to the
// message's body file, made before the entry's transaction commits, so
// a large message is neither copied nor read into memory on delivery,
// and POP3 streams it. A link whose entry never committed (a crash, a
// conflict) is removed by Open (sweepMailFiles); one whose entry was
// deleted goes once the deletion is synced.

// filedMark starts the value of a mailbox entry whose message continues
// in a file. A whole message never starts with a NUL: ours starts with
// Return-Path.
const filedMark = 0

// mailDir is the directory of mailbox files, inside the spool directory.
const mailDir = "mail"

func (s *Spool) mailPath(seq uint64) string {
	return filepath.Join(s.dir, mailDir, fmt.Sprintf("%016x", seq))
}

// putMailboxFiled adds message id, whose body is a file, to user's
// mailbox, behind hdr: the entry holds hdr and the message's head, and
// mail/<seq> is a new name of the body file, made durable before the
// transaction commits (the message's own name for the file goes when
// the message retires, possibly in this very transaction).
func (s *Spool) putMailboxFiled(txn *wtxn, user string, hdr []byte, id string, rec *msgRecord) error {
	if err := checkMailboxName(user); err != nil {
		return err
	}
	var head []byte
	if rec.HeadSize > 0 {
		item, err := txn.Get(chunkKey(id, 0))
		if err != nil {
			return fmt.Errorf("body head of %s: %w", id, err)
		}
		if head, err = item.ValueCopy(nil); err != nil {
			return err
		}
	}
	seq, err := s.ids.next()
	if err != nil {
		return err
	}
	if err := os.Link(s.bodyPath(id), s.mailPath(seq)); err != nil {
		return fmt.Errorf("mailbox file: %w", err)
	}
	if err := fsyncFile(filepath.Join(s.dir, mailDir)); err != nil {
		return fmt.Errorf("mailbox file: %w", err)
	}
	v := []byte{filedMark}
	v = binary.AppendUvarint(v, uint64(rec.Size-int64(len(head))))
	v = append(append(v, hdr...), head...)
	return txn.Set(mailboxKey(user, seq), v)
}

// filedValue splits the value of a filed entry into the file's length and
// what comes before the file; ok is false for a whole message.
func filedValue(v []byte) (fileSize int64, front []byte, ok bool, err error) {
	if len(v) == 0 || v[0] != filedMark {
		return 0, v, false, nil
	}
	n, k := binary.Uvarint(v[1:])
	if k <= 0 {
		return 0, nil, false, fmt.Errorf("%w: mailbox entry", errCorrupt)
	}
	return int64(n), v[1+k:], true, nil
}

// entrySize is the size of the message of a mailbox entry's value.
func entrySize(v []byte) (int64, error) {
	fileSize, front, _, err := filedValue(v)
	return int64(len(front)) + fileSize, err
}

// OpenMailboxMessage opens one message of user's mailbox for reading as
// a stream. Close the Body when done.
func (s *Spool) OpenMailboxMessage(user string, seq uint64) (*Body, error) {
	if err := s.begin(); err != nil {
		return nil, fmt.Errorf("spool: mailbox %s: %w", user, err)
	}
	defer s.end()
	var b *Body
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(mailboxKey(user, seq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		fileSize, front, filed, err := filedValue(v)
		if err != nil || !filed {
			b = &Body{head: front, size: int64(len(front))}
			return err
		}
		f, err := os.Open(s.mailPath(seq))
		if err != nil {
			return fmt.Errorf("%w: mailbox file: %w", errCorrupt, err)
		}
		b = &Body{head: front, f: f, size: int64(len(front)) + fileSize}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: mailbox %s message %d: %w", user, seq, err)
	}
	return b, nil
}

// sweepMailFiles creates the mail directory and removes every file in it
// that no mailbox entry names. It runs at Open.
func (s *Spool) sweepMailFiles() error {
	dir := filepath.Join(s.dir, mailDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		return err
	}
	seqs := make(map[uint64]bool)
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixMailbox)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if k := it.Item().Key(); len(k) >= 8 {
				seqs[binary.BigEndian.Uint64(k[len(k)-8:])] = true
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	removed := 0
	for _, e := range ents {
		seq, err := strconv.ParseUint(e.Name(), 16, 64)
		if err == nil && seqs[seq] {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
		removed++
	}
	if removed > 0 {
		s.log.Info("spool: removed mailbox files no entry names", "files", removed)
	}
	return nil
}

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
			err := item.Value(func(v []byte) (err error) {
				e.Size, err = entrySize(v)
				return err
			})
			if err != nil {
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
	// The files of filed entries, if any, now that no entry names them.
	for _, seq := range seqs {
		if err := os.Remove(s.mailPath(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("spool: remove mailbox file", "seq", seq, "err", err)
		}
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
