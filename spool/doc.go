// Package spool is the relay's durable message store: one Badger database
// (github.com/dgraph-io/badger/v4) holding queued messages, their
// recipients, the delivery schedule, and message history.
//
// The spool stores envelopes in wire form (addresses like "<@a,@b:u@c>" or
// "<>", parameters like " NOTIFY=FAILURE ORCPT=rfc822;u@c") and never
// parses them, so it does not depend on package envelope and makes no
// policy decisions.
//
// # Key layout
//
// All keys start with a one-letter prefix and a slash. <id> is a message ID
// (below), always 13 bytes, so "r/<id>/" can never be a prefix of another
// message's keys. Integers in keys are big-endian binary so that byte order
// is numeric order.
//
//	key                                       value
//	s/version                                 uint32 BE layout version (1)
//	s/idhigh                                  uint64 BE: every ID ever handed out is below this
//	m/<id>                                    message record: envelope, size, recipient count, chunk size
//	b/<id>/<n uint32 BE>                      body chunk n (ChunkSize bytes, the last one shorter;
//	                                          no chunk for an empty body); for a filed body
//	                                          (BodyFile) only b/<id>/0, its head
//	bodies/<id> (a file, not a key)           the rest of a body over InlineMax (body.go)
//	r/<id>/<n uint32 BE>                      recipient record n: path, params, status, attempts,
//	                                          last reply, next attempt
//	t/<due uint64 BE>/<id>/<n uint32 BE>      empty; the schedule index, due = Unix nanoseconds
//	u/<rank byte>/<due uint64 BE>/<id>/<n uint32 BE>
//	                                          empty; the schedule index of a priority class
//	                                          other than 0: rank = 9 - priority (see below)
//	e/<id>/<seq uint64 BE>                    event record: time, kind, recipient (-1: message), text;
//	                                          the first, "received", is made from m/<id> instead
//	                                          (InlineReceived; stored under e/ before that field)
//	x/<user>/<seq uint64 BE>                  local mailbox entry: Return-Path and Delivered-To
//	                                          header lines, then the body (user names must
//	                                          not contain '/'); or, for a filed body, a NUL,
//	                                          the file's length (uvarint), those lines and
//	                                          the head, the rest in mail/<seq, 16 hex digits>
//	d/<token>/<forward path>                  message ID; Badger TTL of the queue lifetime. A
//	                                          recipient handed over by another relay, once under
//	                                          its hop token and once under its origin token
//	                                          (Envelope.Handoff) when that differs (EnqueueOnce):
//	                                          a relay stores an (origin, recipient) once
//	h/<id>                                    summary of a retired message (history.go):
//	                                          envelope, final recipient records, every event;
//	                                          Badger TTL of Options.History ([admin] history)
//	w/<subscriber>/<seq uint64 BE>            outbox notice (outbox.go): an event for subscriber
//	                                          <subscriber> (a [[webhook]] name, [a-z0-9._-]),
//	                                          written in the transaction of the change it reports,
//	                                          deleted when acknowledged; Badger TTL of the
//	                                          webhook's lifetime
//	p/<domain>                                MTA-STS policy of a recipient domain (policy.go), as
//	                                          package mtasts encodes it; Badger TTL of its max_age.
//	                                          Not synced on write: a lost one is fetched again
//
// A message is m/<id> with all its b/ and r/ keys; Enqueue writes them and
// one t/ key per recipient in one transaction, so a
// message is wholly present or wholly absent. Recipient n keeps its r/ key
// (and its index) until the whole message is deleted; its status says
// whether it is still pending.
//
// Message IDs are 13 characters of Crockford base32 (0-9, A-Z without
// I L O U) encoding a uint64: microseconds since the Unix epoch, bumped by
// one when the clock has not advanced or stepped back, so IDs are unique,
// increase in acceptance order, and sort as strings in the same order. They
// stay increasing across restarts even if the clock was set back: before
// handing out an ID at or above s/idhigh, the generator durably raises
// s/idhigh by ten seconds of ID space, and Open resumes above it (and
// above the highest m/ key). The same generator supplies event sequence
// numbers (a stored "received" event's seq is the message ID's own value) and
// mailbox sequence numbers, which serve as stable POP3 UIDs.
//
// # Invariants
//
//   - Every pending recipient of a message that is not held has exactly one
//     t/ key, and its r/ NextAttempt equals that key's due time to the
//     nanosecond. Rescheduling (deferral) therefore deletes
//     t/<old NextAttempt>/<id>/<n> without searching, writes the new t/ key
//     and r/ record and an e/ event, in one transaction.
//   - A held message (Envelope.Held) has no t/ keys: Enqueue writes none for
//     a message accepted as held, hold deletes them, release writes
//     t/<now> keys again. The scheduler never sees held work.
//   - Retiring a recipient (delivered or failed) updates its r/ record and
//     deletes its t/ key (Record). Retiring the last pending one deletes
//     m/, b/, r/ and e/ of the message, every key computed from the
//     message record (an iterator only for the e/ keys of a message that
//     was deferred before). A DSN it owes is to be created in the same
//     transaction (putMessage writes a complete message into a caller's
//     transaction for exactly this). In that same transaction retire
//     writes h/<id>, the summary `relay queue show` reads after the
//     message is gone, with the events of the retiring transaction
//     itself (which never go under e/). An operator action that adds an
//     event sets the message record's ExtraEvents, so that retiring a
//     message never attempted still finds and deletes its e/ keys.
//   - Operator actions (admin.go) are one transaction each, retried on
//     conflict with Record: Hold deletes the t/ keys and sets Held,
//     Release and Retry write t/ keys due now through the floor gate,
//     Delete retires the message with a "deleted" event and no DSN.
//
// The history costs: a summary of a one-recipient message delivered at
// the first attempt is ~330 bytes (so ~1 GiB per 3 million messages
// retired within the window, until Badger's compactions drop the expired
// ones), and recording the retiring delivery took ~85us instead of ~55us
// here (BenchmarkRetire, mostly the larger write to the WAL). History = 0
// keeps none.
//   - Record returns at commit and is synced in the background within
//     50 ms, normally by the next group commit of enqueues: the
//     transaction is atomic, so a crash before the sync only repeats an
//     attempt. Enqueue and EnqueueOnce return only after the sync, because
//     their caller answers 250.
//   - Local delivery writes x/<user>/<seq> and retires the recipient in one
//     transaction.
//   - Outbox notices (outbox.go) are written by the transaction that
//     makes the change they report, for each subscriber of its kind:
//     Record for each recipient it changes (delivered, deferred, failed;
//     a repeated report changes nothing and writes nothing) and for the
//     DSN it queues, Enqueue for each recipient received, Hold, Release
//     and Delete for the message. A change is never kept without its
//     notice, nor a notice without its change. Seqs come from the ID
//     generator, so they increase, but transactions commit out of
//     order: NoticeWatermark is the seq below which no notice is still
//     in flight, and a reader moves its cursor no further than that.
//     AckNotices deletes notices without waiting for a sync: after a
//     crash one may be posted again (at least once, never lost).
//   - Badger's conflict detection is on: a transaction that reads the r/
//     record it rewrites fails with badger.ErrConflict if another
//     transaction changed it meanwhile, and is retried.
//
// The scheduler finds due work with Spool.Due and DueAfter: one seek and a
// read of at most limit+1 keys, no scans, no per-message memory. Badger
// iterators step over deleted keys not yet compacted away, and retired
// deliveries leave them at the start of t/, so the scheduler seeks from a
// floor instead of the start: RaiseFloor(t) makes every later writer of a
// t/ key clamp its due time to at least t (writers hold floorMu for
// reading from choosing the time until their commit), so once it returns
// no key below t can appear any more.
//
// # Priority classes
//
// A message accepted with an MT-PRIORITY (RFC 6710) other than 0 has its
// schedule keys in the index of its class, u/<rank>/, instead of t/:
// rank 0 is priority 9 and rank 8 priority 1, rank 10 priority -1 and
// rank 18 priority -9 (rank 9 would be 0, which is t/). The priority is
// the message record's Priority (an appended field, absent for 0), set by
// the relay from the MAIL parameters after its policy for untrusted
// clients; the spool still parses no parameter. Everything said above of
// t/ keys holds for u/ keys: one per pending recipient of a message not
// held, at its NextAttempt, clamped by the floor, written and deleted in
// the same transactions. schedKey picks the index from the message's
// priority, so no writer can put a key in the wrong one.
//
// The scheduler reads the classes above 0 first, highest first
// (DueClasses: one iterator, one seek per class with keys), then t/, then
// the classes below 0. So when many recipients are due at once, urgent
// ones are taken from the schedule before any ordinary one, at the cost
// of a seek per class and not a scan of the backlog; a message's
// recipients share its class, so a read never splits them more than a
// read of t/ does. Expedite makes chosen recipients due now (the queue
// uses it for priority mail when a next hop that was down is back).
//
// # Hand-off origin
//
// A message handed over by another of our relays keeps its origin token
// (Envelope.Handoff: the hop token it had when it entered our relays) in
// the message record, an appended field after Priority (which is then
// written even when 0), absent for "". EnqueueOnce looks each recipient
// up under the sending relay's hop token and under the origin, and writes
// d/ keys under both in the transaction that stores the message: the
// same message arriving through another relay of a fleet is answered
// with the ID of the copy already here (docs/design.md §7, §18).
//
// # Value encoding
//
// Records are a small hand-written binary format (codec.go): a format
// version byte, then the fields in fixed order as varints and
// length-prefixed strings; times are Unix nanoseconds (0 = zero time).
// Chosen over encoding/json because it is about a third of the size (for
// a typical message the m/ record is 88 bytes instead of 246 and an r/
// record 45 instead of 155; the LSM tree and its WAL hold one per message
// plus one per recipient, and every byte is fsynced), it keeps times
// exact to the nanosecond (NextAttempt must reproduce its t/ key), needs
// no reflection, and a corrupt record is an error, never a panic (tested
// with every truncation). New fields are appended at the end: decoders
// ignore trailing bytes, newer decoders read a field only if bytes remain,
// so that needs no version bump. Statuses are stored as codes 0-3
// (pending, deferred, delivered, failed), never to be renumbered.
//
// # Durability: group commit
//
// Badger runs with SyncWrites=false. Enqueue commits its transaction
// (txn.Commit returns once Badger's writer goroutine has written it to the
// memtable WAL, and large values to the value log, both mmapped files) and
// then waits on a shared sync barrier. A single syncer goroutine takes the
// current round with all its waiters, makes storage durable once, and
// releases them with the result; Enqueue returns the ID only then, and the
// SMTP layer says 250 only then. Callers that join while a sync runs wait
// for the next round, whose sync starts after their commit.
//
// What db.Sync covers (read in badger v4.9.6, db.go and value.go): it
// msyncs the active memtable's WAL (db.mt.SyncWAL) and the newest
// value-log file (vlog.sync syncs filesMap[maxFid] only). Commit writes to
// exactly those two files, with two exceptions that db.Sync alone misses:
//
//   - Value-log rotation: when the value log passes ValueLogFileSize,
//     Badger calls doneWriting on the old file, whose Truncate msyncs it
//     first. Covered by Badger.
//   - Memtable rotation: when a memtable is full, ensureRoomForWrite moves
//     it to the immutable list and starts a new WAL without syncing the old
//     one. A commit that landed in the old WAL just before the rotation is
//     not covered by the next db.Sync (it syncs the new WAL) until the
//     flusher has written the memtable to an SST (msynced, then recorded in
//     the fsynced MANIFEST) and deleted the WAL. A SIGKILL loses nothing
//     (the page cache survives), but a power cut in that window could lose
//     acknowledged mail. The syncer closes the gap: it fsyncs, once, each
//     *.mem file that is no longer the newest and was not fsynced since it
//     stopped being the newest (fsync on another descriptor writes back
//     the mmapped pages too; a file already flushed and removed is
//     skipped). One stat per round finds out whether a newer WAL exists.
//
// Only commits with a value of valueThreshold bytes or more write to the
// value log, and every msync or fsync costs a flush of the disk's cache,
// even for a file with nothing new. So the syncer calls db.Sync only when
// such a commit happened since the value log was last synced: every write
// transaction is a wtxn, which counts those commits after they commit
// (TestWritesGoThroughWtxn keeps other writes out of the package, and GC
// adds to the count itself). Otherwise it fdatasyncs the newest WAL
// through a descriptor it keeps open (fdatasync, as msync is: a WAL never
// changes size, so only its timestamps are left unwritten). After 10,000 small messages /proc/meminfo
// showed 216 kB dirty: the fsync writes what Badger wrote through its map.
//
// Value-log GC has a similar gap: RunValueLogGC copies live values forward
// with ordinary (unsynced) writes and then deletes the old file. Badger
// defers that deletion while any iterator is open, so the GC loop holds an
// iterator across its RunValueLogGC calls, syncs, and only then closes it.
//
// A sync that fails fails every waiter of its round, and the spool then
// refuses every further Enqueue (the error is sticky until restart): after
// an fsync error Linux may have dropped the dirty pages, and a later
// successful fsync would prove nothing. The SMTP layer answers 451 4.3.0.
//
// Commit delay. Syncs slow Badger's writer down: with 32 enqueuers a
// commit took ~0.4 ms with no syncing, ~1.2 ms with group syncs and
// ~4.5 ms with one sync per Enqueue (our reading: writes to WAL pages that
// are under writeback wait for it; two syncer goroutines instead of one
// made throughput worse, not better). Syncing as soon as anyone waited
// therefore produced small rounds (about 6 of 32 enqueuers per sync) and
// only about 2.5x the throughput of one sync per message. Before taking a
// round the syncer now waits, at most 500µs, until the Enqueues whose
// commits are in flight (announced with enter before txn.Commit) have
// joined. An idle server has none in flight and syncs at once. Measured
// here (2 vCPU, virtual disk, 32 enqueuers, 1 KiB bodies, go test ./spool
// -run '^$' -bench Enqueue -benchtime 3s): group commit ~31k msgs/s at ~22
// messages per sync; without the delay ~16k; one sync per Enqueue ~6.8k;
// Badger's own SyncWrites=true ~5.6k.
//
// # Bodies
//
// A message's body arrives as a Draft, written piece by piece while the
// SMTP session reads it: up to InlineMax (64 KiB) in memory, and past
// that all of it streamed through a 64 KiB buffer into bodies/<id>, so a
// session holds at most ~128 KiB whatever the message size (a 20 MiB
// message used to be held whole, and copied). Each piece is reserved
// with the disk guard as it is written (Space). EnqueueDraft
// fdatasyncs the file before the one transaction that writes m/
// (BodyFile, HeadSize), b/<id>/0 (the header we add and the client's
// header section) and every r/ and t/ key; the storage sync that
// acknowledges the message fsyncs bodies/ first, once for all the files
// created since the last one (syncStorage; with SyncWrites, each Draft
// does it itself). A file no committed message owns (a crash mid-DATA)
// is removed by Open (sweepBodies); a committed record whose file is
// missing or short can only be a message never acknowledged (a crash
// between its commit and that sync, with Badger's WAL pages written back
// early), and Open drops it with a history event (dropBodiless): the
// client sends it again. Inline bodies are stored as before, in the
// same transaction.
//
// A filed body is removed when its message retires, but only after the
// storage sync that makes the retirement durable (retireBody, doSync):
// a crash before it undoes the retirement, which must find the body.
// Disk use so follows the queue: the space of a large message is free
// the moment it is delivered, where the value log kept it until GC
// rewrote a file that was half garbage, and its memory map counted in
// the relay's RSS. Readers (delivery, DSNs, queue show, local mailbox
// delivery) take a Body and read it as a stream, with read(2), never
// a map. Local delivery of a filed message copies nothing: mail/<seq> is
// a hard link to the body file, made and synced before the mailbox
// entry commits, and POP3 streams it (mailbox.go). Why not everything in files: each file costs a create, an
// fdatasync and an unlink; at 1 KiB that would be the cost Postfix pays
// per message, while inline bodies ride the group commit.
//
// # Badger tuning
//
// For a small daemon that holds at most a few thousand messages in flight:
// 4 MiB memtables, at most 3 (default 64 MiB x 5); 8 MiB block cache and
// 4 MiB index cache (default 256 MiB and unbounded); 64 MiB value-log files
// (default 1 GiB) so GC returns space in reasonable steps, and any one
// value fits a file; ValueThreshold 512 KiB (Badger's limit for 1 MiB
// tables is 0.6 MiB) so inline bodies stay in the LSM tree and only local
// mailbox copies of large messages and large DSNs reach the value log;
// no block compression and 1 MiB tables at every level, so
// that a compaction of a big queue does not balloon the heap (decompressed
// copies of every block read, and up to 13 table builders at once: 294 MiB
// of anonymous memory to compact 200,000 queued messages with Badger's
// defaults, 64 MiB with these, TestCompactionHeap); 2 compactors (Badger's minimum); metrics off. Badger's log
// goes to slog: errors and warnings as such, its info and debug chatter at
// debug level. Value-log GC runs every Options.GCInterval (5 minutes),
// calling RunValueLogGC(0.5) until it returns ErrNoRewrite.
//
// # Disk space
//
// Badger must never meet a full disk. It writes its memtable WAL
// (*.mem, created sparse at 2 x MemTableSize = 8 MiB), its value log
// (*.vlog, sparse at 2 x ValueLogFileSize = 128 MiB), DISCARD and its
// tables (*.sst, sized, then filled) through memory maps; a store to a
// page of a hole that the filesystem cannot back is a SIGBUS, which the
// Go runtime turns into a fatal crash (we saw it in logFile.writeEntry,
// valueLog.write, and in badger.Open itself). Nor does Badger survive an
// ENOSPC from its own file creation: if newMemTable fails, db.mt is left
// nil and the next write asserts (ensureRoomForWrite). So Open puts a
// guard on the directory (package diskspace) before badger.Open:
//
//   - Pre-allocation. An inotify watch sees each new file at once, and
//     the guard fallocates *.mem and DISCARD whole and *.vlog 8 MiB at a
//     time, a step ahead of Badger's writes (a log is written front to
//     back, so non-zero bytes past the middle of the last step mean the
//     next step is due; fallocate mode 0 fills holes only and never
//     touches data, so it is safe under Badger's map). Badger's stores
//     to these files then land on blocks the file owns. Tables are
//     written in full right after creation and cannot be allocated
//     first: the reserve and the ballast cover them.
//   - Ballast. A 32 MiB file of real blocks (spool/ballast). The guard
//     reads free space every 5 ms; when it drops below min(16 MiB,
//     reserve/2), which our own acceptance never reaches, something else
//     is filling the disk, and the ballast is deleted so that Badger finds
//     blocks for its rotations and flushes. It comes back when free space
//     is above reserve + 1.5 x ballast. A filler that keeps writing after
//     the ballast went (dd until ENOSPC) takes that space too; the daemon
//     then lives on what is allocated, and logs that free space is needed.
//   - Reserve. Space().Reserve(n) counts the n bytes of a message about
//     to be stored against free space at once, under one mutex with a
//     fresh statfs (about a microsecond): 70 sessions ending DATA
//     together cannot pass one figure. Below the reserve new mail gets
//     452 4.3.1; deliveries, their results, DSNs and history are never
//     refused by the guard. The relay's reserve is [queue]
//     min_free_space, by default 4 x max_message_size + 64 MiB. What the
//     daemon must still write with no new mail: memtable rotations (up to
//     3 WALs of 8 MiB, already allocated when created), the flush of each
//     memtable to a table (~4 MiB each, 12 MiB), a compaction's output
//     (1 MiB tables, a few at a time: ~10 MiB), the value-log step
//     (8 MiB), DSNs and history (a few hundred bytes per message): about
//     40 MiB, inside the 64 MiB; a message's body costs about its size
//     once in the value log, or twice for a small one (WAL, then table)
//     until its WAL is flushed, which the reserve also absorbs.
//   - Start. If free space (after deleting the ballast if short) is below
//     what badger.Open needs, a new WAL (8 MiB), the first value-log step
//     (8 MiB), DISCARD (1 MiB) and the flush of a replayed memtable
//     (4 MiB), Open returns a NoSpaceError whose text is one line: "spool:
//     open DIR: 3.1 MiB free, need at least 21 MiB to open the spool".
//     With the ballast in place a full disk at start still opens.
//
// Open also makes the directory and everything in it owner-only (0700
// and 0600) whatever their modes were; relay serve sets umask 077 so that
// the files Badger creates (it asks for 0666) are too.
//
// # Crash recovery and shutdown
//
// Open replays Badger's WALs (truncating a torn tail) and restores the ID
// generator; nothing else needs repair, because every change is one
// transaction. Close waits for in-flight operations (an Enqueue that has
// started completes, synced), stops GC and the syncer, and closes Badger,
// which flushes the memtables. Badger holds an exclusive lock on the
// directory: only the daemon opens the spool.
package spool
