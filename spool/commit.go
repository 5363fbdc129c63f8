package spool

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Enqueue stores a message in ONE Badger transaction: the envelope m/<id>,
// the body b/<id>/<n>, every recipient r/<id>/<n> (status pending, due
// now) and one schedule key t/<due>/<id>/<n> per recipient (none while the
// message is held); its "received" event is made from the envelope when
// read (receivedEvent), not stored. It returns the new
// message ID only after that transaction is durable on disk; many
// concurrent Enqueues share one fsync (group commit).
//
// The Status, Attempts, LastReply and NextAttempt fields of rcpts are
// ignored. env.Received is set from the clock when zero. The spool may
// keep body in memory (see freshCache): the caller must not change it
// afterwards.
//
// Any error means the caller must not acknowledge the message (SMTP: 451
// 4.3.0). The message is then either absent or wholly present, never in
// part. If ctx ends while Enqueue waits for the sync, or the sync fails, a
// committed message may still be delivered later; a client that retries may
// cause a duplicate, never a loss. After a failed sync the spool refuses
// all further Enqueues, because after an fsync error the kernel may have
// dropped dirty pages and a later successful fsync proves nothing.
func (s *Spool) Enqueue(ctx context.Context, env Envelope, rcpts []Recipient, body []byte) (string, error) {
	id, _, err := s.enqueue(ctx, "", env, rcpts, inline(body))
	return id, err
}

// EnqueueID is Enqueue under an ID from NewMessageID, for callers that
// must name the message before storing it (the Received header carries
// the queue ID).
func (s *Spool) EnqueueID(ctx context.Context, id string, env Envelope, rcpts []Recipient, body []byte) error {
	if id == "" {
		return errors.New("spool: enqueue: empty message ID")
	}
	_, _, err := s.enqueue(ctx, id, env, rcpts, inline(body))
	return err
}

// EnqueueDraft stores the message whose body is head followed by what
// was written to d, under d's ID, as EnqueueOnce does (token "" for
// none). The body file, if d has one, is made durable before the
// transaction that names it commits. Afterwards d is spent: on success
// the message owns its file; on failure the file is removed unless the
// message was committed (a failed sync: it may still be delivered).
func (s *Spool) EnqueueDraft(ctx context.Context, token string, ttl time.Duration, env Envelope, rcpts []Recipient, head []byte, d *Draft) (string, error) {
	defer d.Discard()
	if err := d.finish(); err != nil {
		return "", err
	}
	c := content{body: head, file: d.filed, fileSize: d.size}
	if !d.filed {
		c = inline(append(head[:len(head):len(head)], d.mem...))
	}
	id, committed, err := s.enqueueOnce(ctx, d.id, token, ttl, env, rcpts, c)
	d.stored = committed && id == d.id
	return id, err
}

// NewMessageID returns a fresh message ID for EnqueueID.
func (s *Spool) NewMessageID() (string, error) {
	v, err := s.NewID()
	if err != nil {
		return "", err
	}
	return formatID(v), nil
}

// enqueue stores a message; committed says whether its transaction
// committed (even when the sync that followed failed).
func (s *Spool) enqueue(ctx context.Context, id string, env Envelope, rcpts []Recipient, c content) (string, bool, error) {
	if err := s.begin(); err != nil {
		return "", false, fmt.Errorf("spool: enqueue: %w", err)
	}
	defer s.end()
	if err := ctx.Err(); err != nil {
		return "", false, fmt.Errorf("spool: enqueue: %w", err)
	}
	if err := checkNew(env, rcpts); err != nil {
		return "", false, err
	}
	if err := s.brokenErr(); err != nil {
		return "", false, fmt.Errorf("spool: enqueue: %w", err)
	}

	now := s.now()
	if env.Received.IsZero() {
		env.Received = now
	}
	if id == "" {
		s.writeGate.RLock()
		v, err := s.ids.next()
		s.writeGate.RUnlock()
		if err != nil {
			return "", false, fmt.Errorf("spool: enqueue: %w", err)
		}
		id = formatID(v)
	} else if _, err := parseID(id); err != nil {
		return "", false, fmt.Errorf("spool: enqueue %q: %w", id, err)
	}
	if s.group != nil {
		s.group.enter()
	}
	if err := s.commitMessage(id, now, &env, rcpts, c); err != nil {
		if s.group != nil {
			s.group.leave()
		}
		return "", false, fmt.Errorf("spool: enqueue %s: %w", id, err)
	}
	if err := s.waitCommitted(ctx); err != nil {
		return "", true, fmt.Errorf("spool: enqueue %s: %w", id, err)
	}
	return id, true, nil
}

// checkNew checks the envelope of a message to store.
func checkNew(env Envelope, rcpts []Recipient) error {
	if env.From == "" {
		return errors.New(`spool: enqueue: empty reverse path (the null path is "<>")`)
	}
	if len(rcpts) == 0 {
		return errors.New("spool: enqueue: no recipients")
	}
	for i := range rcpts {
		if rcpts[i].To == "" {
			return fmt.Errorf("spool: enqueue: recipient %d: empty forward path", i)
		}
	}
	return nil
}

func (s *Spool) commitMessage(id string, now time.Time, env *Envelope, rcpts []Recipient, c content) error {
	s.writeGate.RLock()
	defer s.writeGate.RUnlock()
	defer s.floor.leave(s.floor.enter())
	txn := s.newWriteTxn()
	defer txn.Discard()
	s.fresh.reserve(id)
	m, err := putMessage(txn, id, s.floor.at(now), env, rcpts, c)
	if err == nil {
		err = s.noticeReceived(txn, id, env, rcpts)
	}
	if err == nil {
		err = txn.Commit()
	}
	if err != nil {
		s.fresh.drop(id)
		return err
	}
	s.fresh.publish(m, c)
	return nil
}

// putMessage adds every key of a new message to txn, its recipients due
// at due (unix nanoseconds), and returns the message as Get will read it
// back. It is separate from the commit so that a later transaction
// (retiring the last recipient and queueing the DSN it owes) can create a
// message atomically with other changes. Its "received" event is not a
// key of its own: receivedEvent makes it from the envelope, which saves
// writing and deleting one key per message.
//
// A filed body (c.file) keeps its head under b/<id>/0 and the rest in its
// body file, which the caller has made durable.
func putMessage(txn *wtxn, id string, due uint64, env *Envelope, rcpts []Recipient, c content) (*Message, error) {
	dueAt := time.Unix(0, int64(due))
	body := c.body
	rec := msgRecord{Envelope: *env, Size: c.size(), NRcpt: len(rcpts), ChunkSize: ChunkSize, InlineReceived: true}
	if c.file {
		rec.BodyFile, rec.HeadSize = true, int64(len(body))
	}
	if err := txn.Set(msgKey(id), encodeMessage(&rec)); err != nil {
		return nil, err
	}
	m := &Message{ID: id, Envelope: *env, Size: rec.Size, Recipients: make([]Recipient, len(rcpts))}
	if !m.Received.IsZero() {
		m.Received = time.Unix(0, m.Received.UnixNano()) // as decoded
	}
	for n, off := uint32(0), 0; off < len(body); n, off = n+1, off+ChunkSize {
		end := min(off+ChunkSize, len(body))
		if err := txn.Set(chunkKey(id, n), body[off:end]); err != nil {
			return nil, err
		}
	}
	for i, r := range rcpts {
		n := uint32(i)
		m.Recipients[i] = Recipient{To: r.To, Params: r.Params, Status: StatusPending, NextAttempt: dueAt, Expanded: r.Expanded}
		val, err := encodeRcpt(&m.Recipients[i])
		if err != nil {
			return nil, err
		}
		if err := txn.Set(rcptKey(id, n), val); err != nil {
			return nil, err
		}
		if !env.Held {
			if err := txn.Set(schedKey(env.Priority, due, id, n), []byte{}); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// receivedEvent is the first event of every message: its acceptance.
func receivedEvent(rec *msgRecord) Event {
	text := fmt.Sprintf("from %s size %d rcpts %d client %s helo %s", rec.From, rec.Size, rec.NRcpt, rec.Client, rec.Helo)
	if rec.AuthUser != "" {
		text += " auth " + rec.AuthUser
	}
	return Event{At: rec.Received, Kind: EventReceived, Rcpt: -1, Text: text}
}

// syncSoon makes everything committed so far durable within
// soonSyncDelay, in the background, for commits whose caller need not
// wait: a crash before the sync only undoes the whole transaction.
func (s *Spool) syncSoon() {
	switch s.mode {
	case modeBadger:
		// Badger synced the commit itself.
	case modeEach:
		s.doSync() // a failure is logged and sticky
	default:
		s.group.syncSoon()
	}
}

// waitDurable returns once everything committed before the call is on disk.
func (s *Spool) waitDurable(ctx context.Context) error {
	switch s.mode {
	case modeBadger:
		return s.brokenErr() // Badger synced the commit itself
	case modeEach:
		return s.doSync()
	default:
		return s.group.wait(ctx, false)
	}
}

// waitCommitted is waitDurable for a caller that announced its commit with
// group.enter.
func (s *Spool) waitCommitted(ctx context.Context) error {
	if s.group != nil {
		return s.group.wait(ctx, true)
	}
	return s.waitDurable(ctx)
}

func (s *Spool) brokenErr() error {
	if p := s.broken.Load(); p != nil {
		return fmt.Errorf("storage unusable after an earlier failed sync: %w", *p)
	}
	return nil
}

// doSync performs one storage sync. A failure is sticky.
func (s *Spool) doSync() error {
	if err := s.brokenErr(); err != nil {
		return err
	}
	// Body files of messages retired before this sync may go once it
	// has made their retirement durable, not before: a crash would undo
	// the retirement and leave the message without its body.
	removals := s.takeRemovals()
	var err error
	if s.syncWrap != nil {
		err = s.syncWrap(s.syncStorage)
	} else {
		err = s.syncStorage()
	}
	s.syncs.Add(1)
	if err == nil {
		for _, id := range removals {
			s.removeBody(id)
		}
	}
	if err != nil {
		s.broken.CompareAndSwap(nil, &err)
		s.log.Error("spool: storage sync failed; refusing new messages until restart", "err", err)
		return fmt.Errorf("storage sync: %w", err)
	}
	return nil
}

// syncStorage makes every write committed so far durable.
//
// Badger writes each commit to the active memtable's write-ahead log (a
// .mem file), and values of valueThreshold bytes or more to the newest
// value-log file too. db.Sync() msyncs both files, and on this kind of
// storage every msync or fsync costs a flush of the disk's cache, even
// for a file with nothing new. Most mail is small: after commits that put
// nothing in the value log (wtxn counts those that did), only the WAL is
// synced, by an fdatasync of our own descriptor for it, which writes the
// pages Badger dirtied through its mapping just as msync does. Measured
// with tools/relay_vs_direct.sh: +7% end to end.
//
// Either way, one case needs more: a WAL that became immutable (its
// memtable full) after our commit but before the sync and is not yet
// flushed to an SST. syncImmutableWALs fsyncs, once, each .mem file other
// than the newest that we have not fsynced since it stopped being the
// newest. (Rotated value-log files are msynced by Badger itself when it
// rotates, and flushed SSTs are msynced before the manifest, which is
// fsynced, refers to them.)
func (s *Spool) syncStorage() error {
	s.walMu.Lock()
	defer s.walMu.Unlock()
	// Before the records that name them: the body files' names (their
	// data was synced by Draft.finish).
	if n := s.newBodies.Load(); n != s.bodiesSynced {
		if err := fsyncFile(s.bodiesPath()); err != nil {
			return fmt.Errorf("fsync %s: %w", s.bodiesPath(), err)
		}
		s.bodiesSynced = n
	}
	if big := s.bigCommits.Load(); big != s.bigSynced {
		if err := s.db.Sync(); err != nil {
			return fmt.Errorf("badger sync: %w", err)
		}
		s.bigSynced = big
		s.fullSyncs++
		_, err := s.syncImmutableWALs()
		return err
	}
	newest, err := s.syncImmutableWALs()
	if err != nil {
		return err
	}
	if err := s.fsyncWAL(newest); err != nil {
		// The newest WAL gone means a newer one appeared after we looked
		// and this one was flushed; Badger's own sync covers every case.
		if err := s.db.Sync(); err != nil {
			return fmt.Errorf("badger sync: %w", err)
		}
		s.fullSyncs++
		_, err := s.syncImmutableWALs()
		return err
	}
	return nil
}

// fsyncWAL fsyncs the WAL numbered fid, keeping it open for the next
// time. The caller holds walMu.
func (s *Spool) fsyncWAL(fid uint64) error {
	if s.walFile == nil || s.walFileFid != fid {
		if s.walFile != nil {
			s.walFile.Close()
			s.walFile = nil
		}
		if fid == 0 {
			return errors.New("no WAL file")
		}
		f, err := os.Open(filepath.Join(s.dir, walName(fid)))
		if err != nil {
			return err
		}
		s.walFile, s.walFileFid = f, fid
	}
	// fdatasync, as Badger's msync(MS_SYNC) is: the file's size never
	// changes (Badger sizes a WAL when it creates it), and block
	// allocations are written because the data needs them; only the
	// timestamps are left, which plain fsync would write every time.
	if err := syscall.Fdatasync(int(s.walFile.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", s.walFile.Name(), err)
	}
	return nil
}

// walName is Badger's name for the WAL of memtable fid.
func walName(fid uint64) string { return fmt.Sprintf("%05d.mem", fid) }

// syncImmutableWALs fsyncs the WALs that stopped being the newest since
// the last call and returns the newest one's number (0: none). The
// caller holds walMu.
func (s *Spool) syncImmutableWALs() (uint64, error) {
	if s.walSynced > 0 {
		// Badger numbers memtables one after the other, so without a file
		// for the next number the newest WAL is still the one db.Sync
		// just synced: one stat instead of listing the directory on every
		// sync.
		next := filepath.Join(s.dir, walName(s.walSynced+1))
		if _, err := os.Stat(next); errors.Is(err, fs.ErrNotExist) {
			return s.walSynced, nil
		}
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", s.dir, err)
	}
	type wal struct {
		fid  uint64
		name string
	}
	var wals []wal
	var newest uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".mem")
		if !ok {
			continue
		}
		fid, err := strconv.ParseUint(name, 10, 32)
		if err != nil {
			continue
		}
		wals = append(wals, wal{fid, e.Name()})
		newest = max(newest, fid)
	}
	for _, w := range wals {
		if w.fid >= newest || w.fid < s.walSynced {
			continue
		}
		if err := fsyncFile(filepath.Join(s.dir, w.name)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // flushed to an SST and removed meanwhile
			}
			return 0, err
		}
		s.walFsyncs++
	}
	s.walSynced = max(s.walSynced, newest)
	return s.walSynced, nil
}

func fsyncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}

// groupSync is the group-commit barrier. Callers that have committed join
// the next round and wait; one goroutine repeatedly takes the round with
// all its current waiters, syncs once, and releases them with the result.
// Waiters that arrive while a sync runs join the following round, so a
// round's sync always starts after each of its waiters' commits.
//
// Syncs slow Badger's writer down (see doc.go), so fewer, fuller rounds
// beat prompt ones. Before taking a round the syncer therefore waits, at most
// maxSyncDelay, for the Enqueues that are between enter and wait (their
// commits in flight) to join it. An idle server has none in flight and
// syncs at once; a busy one gets rounds as full as its concurrency (the
// commit_delay/commit_siblings idea of PostgreSQL, but adaptive).
type groupSync struct {
	fn       func() error
	delay    time.Duration
	mu       sync.Mutex
	next     *syncRound
	inCommit int           // Enqueues between enter and wait/leave
	draining bool          // the syncer waits for inCommit to reach 0
	drained  chan struct{} // capacity 1: inCommit reached 0 while draining
	kick     chan struct{} // capacity 1: "a round has waiters"
	quit     chan struct{}
	done     chan struct{}
	// soon: commits that nobody waits for (Record) are not yet covered by
	// a sync that started after them; soonTimer then runs, to sync them
	// within soonSyncDelay if no waiter brings a round first.
	soon      bool
	soonTimer *time.Timer
}

// maxSyncDelay bounds how long the syncer waits for in-flight commits.
const maxSyncDelay = 500 * time.Microsecond

// soonSyncDelay bounds how long a commit nobody waits for stays unsynced.
// Such commits (delivery results) ride along with the rounds of enqueues
// when there are any; a round of their own would only add an fsync.
const soonSyncDelay = 50 * time.Millisecond

type syncRound struct {
	waiters int
	done    chan struct{}
	err     error // set before done is closed
}

func newSyncRound() *syncRound { return &syncRound{done: make(chan struct{})} }

func newGroupSync(fn func() error, delay time.Duration) *groupSync {
	g := &groupSync{
		fn:      fn,
		delay:   delay,
		next:    newSyncRound(),
		drained: make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	g.soonTimer = time.NewTimer(time.Hour)
	g.soonTimer.Stop()
	go g.loop()
	return g
}

// enter announces a commit that will be followed by wait(ctx, true) or,
// if the commit fails, by leave.
func (g *groupSync) enter() {
	g.mu.Lock()
	g.inCommit++
	g.mu.Unlock()
}

func (g *groupSync) leave() {
	g.mu.Lock()
	g.leaveLocked()
	g.mu.Unlock()
}

func (g *groupSync) leaveLocked() {
	g.inCommit--
	if g.inCommit == 0 && g.draining {
		select {
		case g.drained <- struct{}{}:
		default:
		}
	}
}

// wait returns when a sync that started after the call has completed, with
// that sync's result. entered says the caller called enter before.
func (g *groupSync) wait(ctx context.Context, entered bool) error {
	g.mu.Lock()
	r := g.next
	r.waiters++
	if entered {
		g.leaveLocked()
	}
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default: // a kick is already pending; it will pick us up
	}
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return fmt.Errorf("waiting for sync: %w", ctx.Err())
	}
}

// syncSoon asks for a sync of everything committed so far, within
// soonSyncDelay, without waiting for it.
func (g *groupSync) syncSoon() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.soon {
		g.soon = true
		g.soonTimer.Reset(soonSyncDelay)
	}
}

func (g *groupSync) loop() {
	defer close(g.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-g.kick:
			g.round(timer, false)
		case <-g.soonTimer.C:
			g.round(timer, true)
		case <-g.quit:
			// Nobody should be waiting, but never strand a waiter, and
			// leave nothing unsynced.
			g.round(nil, true)
			return
		}
	}
}

// round runs one sync for the waiters of the next round; with soon also
// without waiters, if commits nobody waits for are not yet covered.
func (g *groupSync) round(timer *time.Timer, soon bool) {
	g.mu.Lock()
	if g.next.waiters == 0 && !(soon && g.soon) {
		g.mu.Unlock()
		return
	}
	if g.inCommit > 0 && g.delay > 0 && timer != nil {
		select { // drop a stale signal
		case <-g.drained:
		default:
		}
		g.draining = true
		g.mu.Unlock()
		timer.Reset(g.delay)
		select {
		case <-g.drained:
			timer.Stop()
		case <-timer.C:
		}
		g.mu.Lock()
		g.draining = false
	}
	r := g.next
	g.next = newSyncRound()
	g.soon = false // the sync below starts after every commit so far
	g.mu.Unlock()
	r.err = g.fn()
	close(r.done)
}

// stop ends the loop. Callers must ensure nobody will call wait again.
func (g *groupSync) stop() {
	close(g.quit)
	<-g.done
}
