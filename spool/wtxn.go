package spool

import badger "github.com/dgraph-io/badger/v4"

// wtxn is a read-write transaction of the spool. Every write goes through
// one, so that the spool knows which commits put a value into Badger's
// value log (values of valueThreshold bytes or more): only after such a
// commit does a storage sync need to sync the value log as well as the
// write-ahead log (see syncStorage). TestWritesGoThroughWtxn keeps other
// writes out of the package.
type wtxn struct {
	*badger.Txn
	s     *Spool
	big   bool     // a value for the value log was set
	after []func() // run once the transaction has committed
	done  []func() // run when the transaction ends (Discard), committed or not
}

// getter is what the read helpers need of a transaction, read-only
// (*badger.Txn) or not (*wtxn).
type getter interface {
	Get(key []byte) (*badger.Item, error)
}

// newWriteTxn starts a read-write transaction; the caller Discards it.
func (s *Spool) newWriteTxn() *wtxn {
	return &wtxn{Txn: s.db.NewTransaction(true), s: s}
}

// update runs fn in a read-write transaction and commits it, as
// badger.DB.Update does.
func (s *Spool) update(fn func(txn *wtxn) error) error {
	txn := s.newWriteTxn()
	defer txn.Discard()
	if err := fn(txn); err != nil {
		return err
	}
	return txn.Commit()
}

func (t *wtxn) Set(key, val []byte) error {
	t.note(val)
	return t.Txn.Set(key, val)
}

func (t *wtxn) SetEntry(e *badger.Entry) error {
	t.note(e.Value)
	return t.Txn.SetEntry(e)
}

func (t *wtxn) note(val []byte) {
	if len(val) >= valueThreshold {
		t.big = true
	}
}

// Commit commits, then counts the commit if it wrote to the value log.
// Counting after the commit is what makes skipping safe: a sync that
// starts after this commit sees the count and syncs the value log; one
// that started before it cannot be the sync this commit's writer waits
// for.
func (t *wtxn) Commit() error {
	err := t.Txn.Commit()
	if t.big {
		t.s.bigCommits.Add(1) // also after an error: it may have written
	}
	if err == nil {
		for _, fn := range t.after {
			fn()
		}
	}
	t.after = nil
	return err
}

// afterCommit runs fn once the transaction has committed, and never if it
// does not: a body file is removed only when no key names it any more.
func (t *wtxn) afterCommit(fn func()) { t.after = append(t.after, fn) }

// onDone runs fn when the transaction is discarded, which every caller
// defers, so after its commit or its failure: the outbox's watermark
// waits for the notices a transaction may still commit.
func (t *wtxn) onDone(fn func()) { t.done = append(t.done, fn) }

// Discard ends the transaction (after Commit too, as Badger allows) and
// runs the onDone functions once.
func (t *wtxn) Discard() {
	t.Txn.Discard()
	for _, fn := range t.done {
		fn()
	}
	t.done = nil
}
