package spool

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/relay-mta/relay/spool/diskspace"
)

// ErrNotFound is returned (wrapped) when a message does not exist.
var ErrNotFound = errors.New("spool: not found")

// ErrClosed is returned (wrapped) by every operation on a closed spool.
var ErrClosed = errors.New("spool: closed")

// Status is the delivery state of one recipient.
type Status string

// Recipient states.
const (
	StatusPending   Status = "pending"   // not yet attempted
	StatusDeferred  Status = "deferred"  // attempted, will be retried
	StatusDelivered Status = "delivered" // done
	StatusFailed    Status = "failed"    // permanently failed (bounced)
)

// Envelope is what the SMTP transaction said about a message, kept in
// wire form so the spool does not depend on address parsing.
type Envelope struct {
	From       string    // reverse path, wire form "<...>" ("<>" for the null path)
	MailParams string    // wire-form MAIL parameters, e.g. " SIZE=100 BODY=8BITMIME"; "" when none
	Received   time.Time // acceptance time; Enqueue sets it from the clock if zero
	Client     string    // client IP address
	Helo       string    // EHLO/HELO argument
	AuthUser   string    // authenticated user, "" when none
	Hops       int       // count of Received headers at acceptance
	Held       bool      // held messages get no schedule keys (see doc.go)
	// Priority is the message's MT-PRIORITY (RFC 6710), -9..9, as the
	// caller decided to honour it: it chooses the schedule index its
	// recipients' keys go in (doc.go, "Priority classes").
	Priority int8
	// Handoff is the origin token of a message handed over by another of
	// our relays (relay/deliver/handoff.go): the hop token it had when it
	// entered them, "" when it entered here. It goes on with the message
	// to the next hop, and EnqueueOnce remembers its recipients under it
	// as well as under the hop token, so that the same message reaching
	// this relay through another relay of a fleet is not stored twice.
	Handoff string
}

// Recipient is one forward path of a message and its delivery state.
type Recipient struct {
	To          string    // forward path, wire form, source route kept: "<@a,@b:u@c>"
	Params      string    // wire-form RCPT parameters, e.g. " NOTIFY=FAILURE ORCPT=rfc822;u@c"
	Status      Status    // delivery state
	Attempts    int       // delivery attempts so far
	LastReply   string    // last remote reply or local error text
	NextAttempt time.Time // due time; equals the time in this recipient's t/ key
	DelayWarned bool      // the one delay DSN for this recipient was queued
	// Expanded marks an address that an alias of several addresses stood
	// for, kept only so that the queue reports it "expanded" (RFC 3461
	// §6.2.7.3) when NOTIFY=SUCCESS asked; it is never delivered. Set at
	// Enqueue.
	Expanded bool
}

// Message is a queued message: its ID, envelope, size and recipients.
type Message struct {
	ID string
	Envelope
	Size       int64       // body length in bytes
	Recipients []Recipient // index in the slice == n in r/<id>/<n>
}

// Due is one entry of the schedule index: recipient Rcpt of message ID is
// due for a delivery attempt at At.
type Due struct {
	ID       string
	Rcpt     int
	At       time.Time
	Priority int8 // the message's; the class of the index the entry is in
}

// Event is one entry of a message's history (e/<id>/<seq>).
type Event struct {
	At   time.Time
	Kind string // EventReceived, and later attempt/delivered/deferred/bounced
	Rcpt int    // recipient index, -1 for the whole message
	Text string
}

// EventReceived is the Kind of the event Enqueue writes.
const EventReceived = "received"

// Options configure Open.
type Options struct {
	Dir    string           // database directory; created if missing
	Logger *slog.Logger     // nil: discard
	Now    func() time.Time // injectable clock; nil: time.Now
	// SyncEachCommit makes every Enqueue sync storage itself instead of
	// sharing a group commit. It is the slow baseline for benchmarks.
	SyncEachCommit bool
	// GCInterval is the value-log GC period: 0 means 5 minutes, negative
	// disables GC.
	GCInterval time.Duration
	// History is how long the summary of a retired message is kept for
	// `relay queue show` (h/<id>, see History); 0 keeps none.
	History time.Duration
	// Space, when not nil, counts the bytes of drafts against the disk
	// reserve as they are written (Draft.Write).
	Space Space
	// MinFree is the free space new mail must leave in Dir's filesystem
	// (Space().Reserve refuses below it); the ballast comes on top.
	MinFree int64
	// Ballast is the size of the ballast file (doc.go, "Disk space"): 0
	// means diskspace.DefaultBallast, negative none.
	Ballast int64
	// Subscribers are the consumers of outbox notices (outbox.go): each
	// change of a kind one of them wants writes a notice for it in the
	// same transaction.
	Subscribers []Subscriber

	// Test and benchmark hooks (unexported, so only this package sets them).
	badgerSyncWrites bool                                 // let Badger fsync every write batch itself
	syncWrap         func(storageSync func() error) error // wraps every storage sync
	syncDelay        time.Duration                        // group commit: max wait for in-flight commits; 0 default, <0 none
	freshBytes       int                                  // bound of the fresh-message cache; 0 default, <0 none
}

// DefaultGCInterval is the value-log GC period when Options.GCInterval is 0.
const DefaultGCInterval = time.Minute

// ChunkSize is the size of body chunks b/<id>/<n>; only the last chunk is
// shorter. It is stored per message, so changing it keeps old messages
// readable.
const ChunkSize = 1 << 20

// valueThreshold: values of at least this size go to the value log, smaller
// ones stay in the LSM tree (so ordinary mail bodies never touch the value log).
const valueThreshold = 512 << 10

// durability modes
const (
	modeGroup = iota
	modeEach
	modeBadger
)

// Spool is the durable message store of one relay. It is safe for
// concurrent use.
type Spool struct {
	db   *badger.DB
	dir  string
	log  *slog.Logger
	now  func() time.Time
	mode int
	ids  *idGen

	history time.Duration // Options.History
	fresh   *freshCache   // messages as enqueued, until first changed
	outbox  *outbox       // notices for subscribers (outbox.go)

	group    *groupSync // modeGroup only
	syncWrap func(func() error) error
	syncs    atomic.Uint64         // storage syncs performed
	broken   atomic.Pointer[error] // first sync failure; sticky
	walMu    sync.Mutex            // guards the storage sync state below
	// walSynced: every memtable WAL file with a fid below it that is no
	// longer the active one has been fsynced since it became immutable.
	walSynced uint64
	walFsyncs int // immutable WALs fsynced (for tests)
	// walFile is the active WAL (fid walFileFid), opened for fsync.
	walFile    *os.File
	walFileFid uint64
	// bigCommits counts commits that wrote to the value log (wtxn);
	// bigSynced is its value when the value log was last synced.
	bigCommits atomic.Uint64
	bigSynced  uint64
	fullSyncs  int // syncs of both logs through Badger (for tests)

	mu       sync.RWMutex
	closed   bool
	inflight sync.WaitGroup

	// writeGate is held shared by every write transaction (and by ID
	// leases, which write); flushMemtables holds it alone, because Badger
	// fails writes outright while it flushes its memtables for DropPrefix.
	writeGate sync.RWMutex

	// floor makes the schedule index seekable from a point rather than
	// from its start (see RaiseFloor). Writers of schedule keys enter it
	// before choosing a due time and leave after their commit.
	floor floorGate

	gcStop chan struct{}
	gcDone chan struct{}

	// drafts counts the bytes of drafts against the disk reserve: the
	// guard, or Options.Space in tests.
	drafts Space
	// newBodies counts body files created and synced, whose directory
	// entries the next storage sync makes durable; bodiesSynced is its
	// value at the last directory fsync (walMu).
	newBodies    atomic.Uint64
	bodiesSynced uint64
	// removals are body files of retired messages waiting for the sync
	// that makes their retirement durable (retireBody).
	removeMu sync.Mutex
	removals []string
	space    *diskspace.Guard // keeps Badger from meeting a full disk

	// writes counts committed writes; compacted is its value at the last
	// idle compaction (gcLoop only).
	writes    atomic.Uint64
	compacted uint64
}

// Open opens (creating if needed) the spool in opts.Dir. After a crash,
// Badger replays its write-ahead logs and truncates any torn tail; every
// transaction that was synced is there, none is half there.
func Open(opts Options) (*Spool, error) {
	if opts.Dir == "" {
		return nil, errors.New("spool: open: no directory")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	ob, err := newOutbox(opts.Subscribers)
	if err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", opts.Dir, err)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", opts.Dir, err)
	}
	if err := MakePrivate(opts.Dir); err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", opts.Dir, err)
	}
	if err := removeEmptyLogs(opts.Dir, log); err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", opts.Dir, err)
	}
	bopts := badgerOptions(opts.Dir, log, opts.badgerSyncWrites)
	space, err := diskspace.Open(opts.Dir, diskspace.Options{
		Reserve:  opts.MinFree,
		Ballast:  opts.Ballast,
		Prealloc: preallocStep(bopts),
		Logger:   log,
	})
	if err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", opts.Dir, err)
	}
	if free, _, _ := space.Free(); free < openNeed(bopts) {
		space.Close()
		return nil, &NoSpaceError{Dir: opts.Dir, Free: free, Need: openNeed(bopts)}
	}
	db, err := badger.Open(bopts)
	if err != nil {
		space.Close()
		return nil, fmt.Errorf("spool: open %s: %w", opts.Dir, err)
	}
	s := &Spool{
		space:    space,
		drafts:   space,
		db:       db,
		dir:      opts.Dir,
		log:      log,
		now:      now,
		syncWrap: opts.syncWrap,
		history:  opts.History,
		fresh:    newFreshCache(cmp.Or(opts.freshBytes, defaultFreshBytes)),
		outbox:   ob,
	}
	if opts.Space != nil {
		s.drafts = opts.Space
	}
	switch {
	case opts.badgerSyncWrites:
		s.mode = modeBadger
	case opts.SyncEachCommit:
		s.mode = modeEach
	default:
		s.mode = modeGroup
		delay := opts.syncDelay
		switch {
		case delay == 0:
			delay = maxSyncDelay
		case delay < 0:
			delay = 0
		}
		s.group = newGroupSync(s.doSync, delay)
	}
	if err := s.recover(); err != nil {
		s.stopSyncer()
		return nil, errors.Join(fmt.Errorf("spool: open %s: %w", opts.Dir, err), db.Close(), space.Close())
	}
	// Every notice stored before is below the IDs handed out from now on:
	// the outbox is complete up to there.
	s.outbox.last = s.ids.last
	if err := s.sweepMailFiles(); err != nil {
		s.stopSyncer()
		return nil, errors.Join(fmt.Errorf("spool: open %s: mailbox files: %w", opts.Dir, err), db.Close(), space.Close())
	}
	if err := s.sweepBodies(); err != nil {
		s.stopSyncer()
		return nil, errors.Join(fmt.Errorf("spool: open %s: bodies: %w", opts.Dir, err), db.Close(), space.Close())
	}
	gc := opts.GCInterval
	if gc == 0 {
		gc = DefaultGCInterval
	}
	if gc > 0 {
		s.gcStop = make(chan struct{})
		s.gcDone = make(chan struct{})
		go s.gcLoop(gc)
	}
	return s, nil
}

// removeEmptyLogs deletes empty write-ahead-log (.mem) and value-log
// (.vlog) files. Badger creates such a file and then sizes it, so a kill
// between the two leaves one behind, and badger.Open then fails on it
// ("Create a new file": badger issue #2207, unfixed in v4.9.6); our crash
// test hit it. An empty log holds nothing, so removing it loses nothing.
func removeEmptyLogs(dir string, log *slog.Logger) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".mem") && !strings.HasSuffix(name, ".vlog") {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.Size() != 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return err
		}
		log.Warn("spool: removed an empty log file left by a crash", "file", name)
	}
	return nil
}

// badgerOptions tunes Badger for a small daemon: a spool holds at most a
// few thousand messages in flight, most of them a few KiB.
func badgerOptions(dir string, log *slog.Logger, syncWrites bool) badger.Options {
	o := badger.DefaultOptions(dir)
	o.Logger = badgerLogger{log}
	// We fsync ourselves, once per group of commits (see groupSync).
	o.SyncWrites = syncWrites
	// 4 MiB memtables (default 64), at most 3 of them: ~15 MiB of arenas
	// instead of ~400, and as much again of their write-ahead logs mapped.
	// A memtable still holds a couple of thousand small messages. From 16
	// to 8 MiB the relay's peak RSS in tools/relay_vs_direct.sh went from
	// ~190 to ~120 MiB and its rate up 3.6% (fewer fresh pages to fault
	// in); from 8 to 4 MiB its rate went up 1.5%, and with 200,000 queued
	// messages its peak RSS came down from 242-265 to 178-187 MiB.
	o.MemTableSize = 4 << 20
	o.NumMemtables = 3
	// Small caches: the working set is the head of the queue.
	o.BlockCacheSize = 8 << 20
	o.IndexCacheSize = 4 << 20
	// No block compression, and 1 MiB tables at every level (default 2 MiB
	// doubling per level). A compaction decompresses every block it reads
	// into a fresh buffer and keeps up to 8 + 5 table builders of two
	// table sizes each: compacting 200,000 queued messages of prose took
	// the process to 294 MiB of anonymous memory with the defaults, 64 MiB
	// with these (TestCompactionHeap). Queued mail then takes its raw size
	// on disk, as Postfix's queue files do.
	o.Compression = options.None
	o.BaseTableSize = 1 << 20
	o.TableSizeMultiplier = 1
	// Bodies larger than InlineMax are files of their own (body.go), so
	// only values of 512 KiB or more (Badger allows at most 0.6 of a
	// table) use the value log: local mailbox copies of large messages,
	// and large DSNs. A value must fit one value-log file, so the files
	// are 64 MiB (default 1 GiB), more than the largest message; the
	// disk guard allocates them in steps (space.go).
	o.ValueLogFileSize = 64 << 20
	o.ValueThreshold = valueThreshold
	o.NumCompactors = 2 // Badger's minimum
	o.MetricsEnabled = false
	o.NumVersionsToKeep = 1
	o.DetectConflicts = true // later read-modify-write transactions rely on it
	return o
}

// badgerLogger routes Badger's log onto slog. Errors and warnings keep their
// level; Badger's chatty info and debug lines go to slog's debug level.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.emit(slog.LevelError, f, a) }
func (b badgerLogger) Warningf(f string, a ...any) { b.emit(slog.LevelWarn, f, a) }
func (b badgerLogger) Infof(f string, a ...any)    { b.emit(slog.LevelDebug, f, a) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.emit(slog.LevelDebug, f, a) }

func (b badgerLogger) emit(level slog.Level, f string, a []any) {
	ctx := context.Background()
	if !b.l.Enabled(ctx, level) {
		return
	}
	msg := fmt.Sprintf(f, a...)
	for len(msg) > 0 && (msg[len(msg)-1] == '\n' || msg[len(msg)-1] == ' ') {
		msg = msg[:len(msg)-1]
	}
	b.l.Log(ctx, level, msg, "component", "badger")
}

// recover checks the layout version and restores the ID generator.
func (s *Spool) recover() error {
	var high uint64
	err := s.update(func(txn *wtxn) error {
		item, err := txn.Get([]byte(keyVersion))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			var v [4]byte
			binary.BigEndian.PutUint32(v[:], layoutVersion)
			if err := txn.Set([]byte(keyVersion), v[:]); err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			err := item.Value(func(v []byte) error {
				if len(v) != 4 || binary.BigEndian.Uint32(v) != layoutVersion {
					return fmt.Errorf("unsupported spool layout version %x (want %d)", v, layoutVersion)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		item, err = txn.Get([]byte(keyIDHigh))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			err := item.Value(func(v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("%w: %s", errCorrupt, keyIDHigh)
				}
				high = binary.BigEndian.Uint64(v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		// Belt and braces: never go below the highest message ID present.
		it := txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: []byte(prefixMessage)})
		defer it.Close()
		it.Seek([]byte(prefixMessage + "\xff"))
		if it.Valid() {
			k := it.Item().Key()
			if v, err := parseID(string(k[len(prefixMessage):])); err == nil && v >= high {
				high = v + 1
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.doSync(); err != nil { // make the version key durable
		return err
	}
	s.ids = &idGen{now: s.now, ceiling: high, persist: s.persistIDHigh}
	if high > 0 {
		s.ids.last = high - 1
	}
	return nil
}

// persistIDHigh durably records that every ID handed out is below high.
func (s *Spool) persistIDHigh(high uint64) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], high)
	if err := s.update(func(txn *wtxn) error {
		return txn.Set([]byte(keyIDHigh), v[:])
	}); err != nil {
		return err
	}
	return s.waitDurable(context.Background())
}

// idGen hands out unique, increasing 64-bit IDs: microseconds since the
// Unix epoch, bumped by one when the clock has not advanced (or went back).
// Before handing out an ID at or above the persisted ceiling it durably
// raises the ceiling by idReserve, so after a restart (even with the clock
// set back) new IDs start above every ID ever handed out.
type idGen struct {
	mu      sync.Mutex
	now     func() time.Time
	last    uint64
	ceiling uint64
	persist func(uint64) error
}

// idReserve is how far ahead (in µs of ID space) the ceiling is raised; one
// extra synced write per 10 s of IDs.
const idReserve = uint64(10 * time.Second / time.Microsecond)

func (g *idGen) next() (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v := uint64(0)
	if us := g.now().UnixMicro(); us > 0 {
		v = uint64(us)
	}
	if v <= g.last {
		v = g.last + 1
	}
	if v >= g.ceiling {
		c := v + idReserve
		if err := g.persist(c); err != nil {
			return 0, fmt.Errorf("reserve IDs: %w", err)
		}
		g.ceiling = c
	}
	g.last = v
	return v, nil
}

// NewID returns a fresh unique ID from the same generator as message IDs
// (time-ordered, increasing across restarts). Later operations use it for
// event and mailbox sequence numbers.
func (s *Spool) NewID() (uint64, error) {
	if err := s.begin(); err != nil {
		return 0, fmt.Errorf("spool: new id: %w", err)
	}
	defer s.end()
	s.writeGate.RLock()
	v, err := s.ids.next()
	s.writeGate.RUnlock()
	if err != nil {
		return 0, fmt.Errorf("spool: new id: %w", err)
	}
	return v, nil
}

// begin registers an operation; it fails once Close has started.
func (s *Spool) begin() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.inflight.Add(1)
	return nil
}

func (s *Spool) end() { s.inflight.Done() }

// Close waits for in-flight operations (an Enqueue in progress completes
// and is synced), stops value-log GC and the syncer, and closes Badger,
// which flushes its memtables. Calling Close again returns nil.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.inflight.Wait()
	if s.gcStop != nil {
		close(s.gcStop)
		<-s.gcDone
	}
	s.stopSyncer()
	s.walMu.Lock()
	if s.walFile != nil {
		s.walFile.Close()
		s.walFile = nil
	}
	s.walMu.Unlock()
	err := s.db.Close()
	s.space.Close() // after Badger's last flush, which it may have had to allocate
	if err != nil {
		return fmt.Errorf("spool: close %s: %w", s.dir, err)
	}
	return nil
}

func (s *Spool) stopSyncer() {
	if s.group != nil {
		s.group.stop()
	}
}

// gcLoop runs value-log GC every interval until Close.
func (s *Spool) gcLoop(interval time.Duration) {
	defer close(s.gcDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.gcStop:
			return
		case <-t.C:
			s.runGC()
		}
	}
}

// runGC rewrites value-log files that are at least half garbage, until
// Badger finds none.
//
// Badger's GC copies live values forward with unsynced writes (we run with
// SyncWrites=false) and then deletes the old file. A power cut between the
// two would lose the copies. Badger defers deleting GC'd files while any
// iterator is open, so we hold one across the GC and close it only after
// a storage sync has made the copies durable.
func (s *Spool) runGC() {
	txn := s.db.NewTransaction(false)
	it := txn.NewIterator(badger.IteratorOptions{})
	defer func() {
		it.Close() // deletes the rewritten files, now that their data is synced
		txn.Discard()
	}()
	rewritten := 0
	for !s.gcStopping() {
		err := s.db.RunValueLogGC(0.5)
		if err != nil {
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				s.log.Warn("spool: value-log GC", "err", err)
			}
			break
		}
		rewritten++
	}
	if rewritten > 0 {
		s.bigCommits.Add(1) // the copies went to the value log behind wtxn's back
		if err := s.waitDurable(context.Background()); err != nil {
			s.log.Error("spool: sync after value-log GC", "err", err)
			return
		}
		s.log.Info("spool: value-log GC", "files_rewritten", rewritten)
	}
	s.compactIfIdle()
}

// compactIfIdle compacts the LSM tree once the queue has drained after a
// burst. Badger compacts level 0 only when five tables have piled up, so
// without this the tables full of deleted mail would keep their disk
// space until the next burst.
func (s *Spool) compactIfIdle() {
	w := s.writes.Load()
	if w == s.compacted || !s.queueEmpty() {
		return
	}
	if err := s.flushMemtables(); err != nil {
		s.log.Warn("spool: flush memtables", "err", err)
		return
	}
	if err := s.db.Flatten(1); err != nil {
		s.log.Warn("spool: compaction", "err", err)
		return
	}
	s.compacted = w
	s.log.Info("spool: compacted after the queue drained")
}

// prefixFlush holds the one key flushMemtables writes and drops at once.
const prefixFlush = "f/"

// flushMemtables writes Badger's memtables out as tables. Badger has no
// call for that alone, but DropPrefix flushes them first, so a key is
// written under a prefix of its own and dropped. Without the flush, the
// deletions of the last messages would stay in the memtable while the
// tables on disk keep those messages: up to a memtable's worth of dead
// mail until the next burst. Writes wait meanwhile (writeGate): Badger
// would fail them.
func (s *Spool) flushMemtables() error {
	s.writeGate.Lock()
	defer s.writeGate.Unlock()
	key := []byte(prefixFlush + "x")
	if err := s.update(func(txn *wtxn) error { return txn.Set(key, nil) }); err != nil {
		return err
	}
	return s.db.DropPrefix([]byte(prefixFlush))
}

// queueEmpty reports whether no message is queued.
func (s *Spool) queueEmpty() bool {
	empty := false
	s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixMessage)})
		defer it.Close()
		it.Rewind()
		empty = !it.Valid()
		return nil
	})
	return empty
}

func (s *Spool) gcStopping() bool {
	select {
	case <-s.gcStop:
		return true
	default:
		return false
	}
}
