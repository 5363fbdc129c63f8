package spool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	badger "github.com/dgraph-io/badger/v4"
)

// InlineMax is the largest body kept inside Badger (as b/ chunks in the
// LSM tree). A larger body is a file of its own under <dir>/bodies,
// written as it arrives and unlinked when its message retires: memory
// does not grow with message size, disk use follows the queue, and
// Badger's value log and its memory map stay out of the way (see doc.go,
// "Bodies").
const InlineMax = 64 << 10

// bodiesDir is the directory of body files, inside the spool directory.
const bodiesDir = "bodies"

// fileWriteBuf is the buffer in front of a body file: a few large writes
// instead of one per network read.
const fileWriteBuf = 64 << 10

// ErrNoSpace is returned (wrapped) by Draft.Write when the disk reserve
// would be touched: the message cannot be taken now (SMTP 452 4.3.1).
var ErrNoSpace = errors.New("spool: insufficient disk space")

// Space is what the spool asks of a disk-space guard: bytes about to be
// written are counted against free space at once, and given back when
// written or abandoned.
type Space interface {
	Reserve(n int64) bool
	Release(n int64)
}

// A Draft is the body of a message being received. It keeps up to
// InlineMax bytes in memory; past that everything goes to the message's
// body file as it arrives, so a session holds at most InlineMax plus a
// write buffer whatever the message size. A Draft is used by one
// goroutine; it ends in EnqueueDraft or Discard.
type Draft struct {
	s        *Spool
	id       string
	mem      []byte
	f        *os.File
	w        *bufio.Writer
	size     int64
	reserved int64      // counted against the disk reserve, not yet released
	err      error      // sticky write error
	readers  []*os.File // opened by Reader, closed by finish or Discard
	filed    bool       // the body file is complete and closed
	stored   bool       // a committed message owns the body file
}

// NewDraft starts the body of message id (from NewMessageID).
func (s *Spool) NewDraft(id string) *Draft {
	return &Draft{s: s, id: id}
}

// ID is the message ID the draft was started for.
func (d *Draft) ID() string { return d.id }

// Size is the number of bytes written so far.
func (d *Draft) Size() int64 { return d.size }

// Write appends p. An error is sticky; it wraps ErrNoSpace when the disk
// reserve would be touched.
func (d *Draft) Write(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if !d.reserve(int64(len(p))) {
		d.err = fmt.Errorf("spool: body of %s: %w", d.id, ErrNoSpace)
		return 0, d.err
	}
	if d.f == nil && len(d.mem)+len(p) <= InlineMax {
		d.mem = append(d.mem, p...)
		d.size += int64(len(p))
		return len(p), nil
	}
	if d.f == nil {
		if err := d.spill(); err != nil {
			d.err = err
			return 0, err
		}
	}
	n, err := d.w.Write(p)
	d.size += int64(n)
	if err != nil {
		d.err = fmt.Errorf("spool: body of %s: %w", d.id, err)
		return n, d.err
	}
	return n, nil
}

func (d *Draft) reserve(n int64) bool {
	if d.s.drafts == nil || d.size+n <= d.reserved {
		return true
	}
	// Ahead, in steps: the guard is asked once per reserveStep, not once
	// per network read.
	step := max(d.size+n-d.reserved, reserveStep)
	if !d.s.drafts.Reserve(step) {
		if step == d.size+n-d.reserved || !d.s.drafts.Reserve(d.size+n-d.reserved) {
			return false
		}
		step = d.size + n - d.reserved
	}
	d.reserved += step
	return true
}

// reserveStep is how far ahead a draft reserves disk space.
const reserveStep = 256 << 10

// spill moves the body from memory to its file.
func (d *Draft) spill() error {
	f, err := os.OpenFile(d.s.bodyPath(d.id), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("spool: body of %s: %w", d.id, err)
	}
	d.f, d.w = f, bufio.NewWriterSize(f, fileWriteBuf)
	if _, err := d.w.Write(d.mem); err != nil {
		return fmt.Errorf("spool: body of %s: %w", d.id, err)
	}
	d.mem = nil
	return nil
}

// Reader returns a reader of everything written so far, from the start;
// the Draft may not be written while it is in use.
func (d *Draft) Reader() (io.Reader, error) {
	if d.err != nil {
		return nil, d.err
	}
	if d.f == nil {
		return bytes.NewReader(d.mem), nil
	}
	if err := d.w.Flush(); err != nil {
		d.err = fmt.Errorf("spool: body of %s: %w", d.id, err)
		return nil, d.err
	}
	f, err := os.Open(d.f.Name())
	if err != nil {
		return nil, fmt.Errorf("spool: body of %s: %w", d.id, err)
	}
	// A reader owns its descriptor; finish closes it with the draft.
	d.readers = append(d.readers, f)
	return io.NewSectionReader(f, 0, d.size), nil
}

// finish makes the body file durable (when there is one) and closes it.
func (d *Draft) finish() error {
	d.closeReaders()
	if d.err != nil {
		return d.err
	}
	if d.f == nil {
		return nil
	}
	err := d.w.Flush()
	if err == nil {
		err = syscall.Fdatasync(int(d.f.Fd()))
	}
	if cerr := d.f.Close(); err == nil {
		err = cerr
	}
	d.f = nil
	if err == nil {
		// The file's name must survive a crash as well as its data. With
		// a group commit, the sync that makes the message durable fsyncs
		// the directory first, once for every file created before it
		// (syncStorage); a crash before then may leave a committed record
		// without its file, of a message never acknowledged, which the
		// next Open drops (sweepBodies).
		if d.s.mode == modeBadger {
			err = fsyncFile(d.s.bodiesPath())
		} else {
			d.s.newBodies.Add(1)
		}
	}
	if err != nil {
		d.err = fmt.Errorf("spool: body of %s: %w", d.id, err)
		return d.err
	}
	d.filed = true
	return nil
}

// Discard abandons the draft: its file is removed and its reservation
// given back. Discard after EnqueueDraft only gives back the reservation.
func (d *Draft) Discard() {
	d.closeReaders()
	if d.f != nil {
		d.f.Close()
		d.f = nil
		d.filed = true
	}
	if d.filed && !d.stored {
		os.Remove(d.s.bodyPath(d.id))
	}
	d.filed = false
	d.mem = nil
	d.release()
}

func (d *Draft) release() {
	if d.reserved > 0 && d.s.drafts != nil {
		d.s.drafts.Release(d.reserved)
	}
	d.reserved = 0
}

func (d *Draft) closeReaders() {
	for _, f := range d.readers {
		f.Close()
	}
	d.readers = nil
}

// content is a body as putMessage stores it: inline, all of it in body;
// or, when file is true, head in b/<id>/0 and the rest (fileSize bytes)
// in the message's body file.
type content struct {
	body     []byte
	file     bool
	fileSize int64
}

func inline(body []byte) content { return content{body: body} }

func (c content) size() int64 { return int64(len(c.body)) + c.fileSize }

// bodiesPath is the directory of body files.
func (s *Spool) bodiesPath() string { return filepath.Join(s.dir, bodiesDir) }

// bodyPath is the body file of message id.
func (s *Spool) bodyPath(id string) string { return filepath.Join(s.dir, bodiesDir, id) }

// retireBody removes the body file of a message whose retirement has
// committed, once that is durable: at once when Badger synced the commit
// itself, else after the next storage sync (doSync).
func (s *Spool) retireBody(id string) {
	if s.mode == modeBadger {
		s.removeBody(id)
		return
	}
	s.removeMu.Lock()
	s.removals = append(s.removals, id)
	s.removeMu.Unlock()
}

// takeRemovals returns the body files waiting for a sync, and forgets them.
func (s *Spool) takeRemovals() []string {
	s.removeMu.Lock()
	defer s.removeMu.Unlock()
	r := s.removals
	s.removals = nil
	return r
}

// removeBody unlinks the body file of a retired message. A failure only
// leaves an orphan, which the next Open removes.
func (s *Spool) removeBody(id string) {
	if err := os.Remove(s.bodyPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("spool: remove body file", "id", id, "err", err)
	}
}

// sweepBodies creates the bodies directory and removes every body file no
// committed message owns: drafts cut short by a crash, and files of
// messages retired just before one. It runs at Open, before anything can
// write a draft.
func (s *Spool) sweepBodies() error {
	dir := s.bodiesPath()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	removed := 0
	sizes := make(map[string]int64, len(ents))
	err = s.db.View(func(txn *badger.Txn) error {
		for _, e := range ents {
			id := e.Name()
			rec, err := getMsgRecord(txn, id)
			switch {
			case err == nil && rec.BodyFile:
				if info, err := e.Info(); err == nil {
					sizes[id] = info.Size()
				}
				continue
			case err != nil && !errors.Is(err, ErrNotFound):
				return err
			}
			if err := os.Remove(filepath.Join(dir, id)); err != nil {
				return err
			}
			removed++
		}
		return nil
	})
	if removed > 0 {
		s.log.Info("spool: removed body files no message owns", "files", removed)
	}
	if err != nil {
		return err
	}
	return s.dropBodiless(sizes)
}

// dropBodiless removes the messages whose body file is missing or short
// (sizes: the body files found, by message ID). Only a crash between a
// message's commit and the sync that acknowledges it leaves one (see
// Draft.finish): the client was never told 250 and sends it again.
func (s *Spool) dropBodiless(sizes map[string]int64) error {
	var lost []string
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixMessage)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			id := string(it.Item().Key()[len(prefixMessage):])
			err := it.Item().Value(func(v []byte) error {
				rec, err := decodeMessage(v)
				if err != nil {
					return err
				}
				if size, ok := sizes[id]; rec.BodyFile && (!ok || size != rec.Size-int64(rec.HeadSize)) {
					lost = append(lost, id)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range lost {
		s.log.Warn("spool: dropped a message whose body file did not survive a crash before it was acknowledged", "id", id)
		if _, err := s.operate("drop", id, false, s.deleteOp("at start: its body file was lost in a crash before the message was acknowledged")); err != nil {
			return err
		}
	}
	return nil
}

// Body is a stored message body, read with NewReader. Close it when done.
type Body struct {
	head []byte   // the inline body, or the head of a filed one
	f    *os.File // the body file, nil for an inline body
	size int64
}

// Size is the body's length in bytes.
func (b *Body) Size() int64 { return b.size }

// NewReader returns a reader of the whole body from its start. Several
// readers may be used at once.
func (b *Body) NewReader() io.Reader {
	if b.f == nil {
		return bytes.NewReader(b.head)
	}
	return io.MultiReader(bytes.NewReader(b.head), io.NewSectionReader(b.f, 0, b.size-int64(len(b.head))))
}

// Close releases the body file.
func (b *Body) Close() error {
	if b.f == nil {
		return nil
	}
	return b.f.Close()
}

// ReadAll returns the body in memory; for callers that need all of it
// and know it is small, and for tests.
func (b *Body) ReadAll() ([]byte, error) {
	if b.f == nil {
		return b.head, nil
	}
	return io.ReadAll(b.NewReader())
}

// openBodyFile opens the body of a message whose record says it is filed.
func (s *Spool) openBodyFile(txn getter, id string, rec *msgRecord) (*Body, error) {
	var head []byte
	if rec.HeadSize > 0 {
		item, err := txn.Get(chunkKey(id, 0))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w: body head missing", errCorrupt)
		}
		if err != nil {
			return nil, err
		}
		if head, err = item.ValueCopy(nil); err != nil {
			return nil, err
		}
	}
	f, err := os.Open(s.bodyPath(id))
	if err != nil {
		return nil, fmt.Errorf("%w: body file: %w", errCorrupt, err)
	}
	st, err := f.Stat()
	if err != nil || st.Size() != rec.Size-int64(len(head)) {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%w: body file is %d bytes, envelope says %d", errCorrupt, st.Size(), rec.Size-int64(len(head)))
		}
		return nil, err
	}
	return &Body{head: head, f: f, size: rec.Size}, nil
}

// BytesBody is a Body held in memory, for callers (and tests) that have
// a message in hand rather than in the spool.
func BytesBody(b []byte) *Body { return &Body{head: b, size: int64(len(b))} }
