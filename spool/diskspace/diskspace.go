// Package diskspace keeps a Badger database from ever meeting a full
// disk. Badger writes its logs and tables through memory maps of files
// created sparse, and a store to a page of a hole that the filesystem
// cannot back is a SIGBUS, which kills a Go program; Badger does not
// survive an ENOSPC from its own file creation either. So a Guard watches
// the directory and
//
//   - allocates the files Badger fills through its maps (write-ahead logs,
//     value logs, the discard stats) as soon as they appear, so that
//     Badger's stores land on blocks it already owns;
//   - keeps a ballast file of real blocks that it deletes the moment free
//     space runs low, so that Badger finds room for its rotations and
//     table flushes when something else has filled the disk, and
//     re-creates once space has returned;
//   - counts the bytes about to be written for new mail against a reserve
//     at once (Reserve), so that concurrent senders cannot all pass one
//     free-space figure.
//
// See spool/doc.go, "Disk space", for the arithmetic.
package diskspace

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Defaults of Options.
const (
	DefaultPoll    = 5 * time.Millisecond
	DefaultBallast = 32 << 20
)

// BallastName is the ballast file's name in the guarded directory.
const BallastName = "ballast"

// Options configure a Guard.
type Options struct {
	// Reserve is the free space (not counting the ballast) that new mail
	// must leave: Reserve and Room refuse below it.
	Reserve int64
	// Ballast is the size of the ballast file: 0 means DefaultBallast,
	// negative none.
	Ballast int64
	// Poll is how often free space is read: 0 means DefaultPoll.
	Poll time.Duration
	// Prealloc says how a file of the directory is to be allocated: 0
	// leaves it sparse; a positive step allocates its first step bytes at
	// once and the next step whenever the writes have passed the middle
	// of what is allocated (the whole file when step is at least its
	// size). nil allocates nothing.
	Prealloc func(name string) (step int64)
	Logger   *slog.Logger // nil: discard
}

// Guard watches one directory; see the package comment. Its methods are
// safe for concurrent use.
type Guard struct {
	dir      string
	reserve  int64
	ballast  int64 // size; 0 when none
	lowWater int64 // below this much free the ballast goes
	poll     time.Duration
	prealloc func(string) int64
	log      *slog.Logger

	mu       sync.Mutex
	inflight int64
	// The last free-space reading, when it was taken, and the bytes
	// released since (perhaps written to disk after it): see roomLocked.
	readFree int64
	readAt   time.Time
	released int64
	refusing bool // the last Reserve or Room refused: to log changes once
	statErr  bool // statfs failed last time: to log once

	// Owned by the watcher goroutine (and by Open before it starts).
	inotify   int
	files     map[string]*allocFile
	hasBallst bool
	lowLogged bool

	stop chan struct{}
	done chan struct{}
}

// allocFile is a file being allocated in steps.
type allocFile struct {
	f     *os.File
	step  int64
	alloc int64 // bytes from the start known to be allocated
	full  bool  // allocated to its size
	warn  bool  // an allocation failure was logged
}

// Open starts guarding dir, which must exist. It deletes the ballast if
// free space is short, allocates the existing files that Prealloc names,
// and starts a goroutine that keeps doing so until Close. The ballast is
// (re-)created by that goroutine when there is room for it.
func Open(dir string, o Options) (*Guard, error) {
	g := &Guard{
		dir:      dir,
		reserve:  max(o.Reserve, 0),
		ballast:  o.Ballast,
		poll:     o.Poll,
		prealloc: o.Prealloc,
		log:      o.Logger,
		files:    map[string]*allocFile{},
		inotify:  -1,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if g.ballast == 0 {
		g.ballast = DefaultBallast
	}
	g.ballast = max(g.ballast, 0)
	// Below the reserve only what the daemon must write brings free space
	// down; the ballast is for when something else took it.
	g.lowWater = g.ballast / 2
	if g.reserve > 0 {
		g.lowWater = min(g.lowWater, g.reserve/2)
	}
	if g.poll <= 0 {
		g.poll = DefaultPoll
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.prealloc == nil {
		g.prealloc = func(string) int64 { return 0 }
	}
	if _, err := os.Stat(filepath.Join(dir, BallastName)); err == nil {
		g.hasBallst = true
	}
	os.Remove(filepath.Join(dir, BallastName+".new")) // left by a crash
	if g.ballast == 0 {
		g.removeBallast("no ballast configured")
	}
	if free, err := g.statfs(); err != nil {
		return nil, err
	} else if free < g.lowWater+g.startNeed() {
		g.removeBallast("free space is short at start")
	}
	// The watch first, then the scan: no file created in between is missed.
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("diskspace: inotify: %w", err)
	}
	g.inotify = fd
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_MODIFY|unix.IN_DELETE|unix.IN_MOVED_FROM); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("diskspace: watch %s: %w", dir, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("diskspace: %w", err)
	}
	for _, e := range ents {
		// Of the files there before, only those allocated whole may be
		// written again (Badger's DISCARD); a log allocated in steps is
		// never appended to after a restart (Badger starts a new one), and
		// allocating it further would only waste space.
		if info, err := e.Info(); err == nil && g.prealloc(e.Name()) >= info.Size() {
			g.track(e.Name())
		}
	}
	g.tick(false)
	go g.watch()
	return g, nil
}

// startNeed is a margin for Open's decision to drop the ballast: the
// first allocation steps of the files that exist (or will) at start are
// not known here, so one ballast's worth stands for them.
func (g *Guard) startNeed() int64 { return g.ballast }

// Close stops the watcher and closes the files it holds; the ballast
// stays for the next Open.
func (g *Guard) Close() error {
	select {
	case <-g.stop:
		return nil
	default:
	}
	close(g.stop)
	<-g.done
	for name, af := range g.files {
		af.f.Close()
		delete(g.files, name)
	}
	return unix.Close(g.inotify)
}

// Reserve counts n bytes about to be written (a message being received)
// against free space at once: it returns false, and counts nothing, when
// free space less the bytes already in flight less n would fall below the
// reserve. Each true must be followed by Release(n) once the bytes are
// written or abandoned.
func (g *Guard) Reserve(n int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.roomLocked(n) {
		return false
	}
	g.inflight += n
	return true
}

// Release gives back n bytes of a successful Reserve.
func (g *Guard) Release(n int64) {
	g.mu.Lock()
	g.inflight -= n
	g.released += n
	g.mu.Unlock()
}

// Room reports whether n more bytes would fit above the reserve now,
// without reserving them (MAIL FROM with SIZE=).
func (g *Guard) Room(n int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.roomLocked(n)
}

// Reusing a free-space reading: every message asks twice (MAIL and
// DATA), and at thousands of messages a second statfs, which sums per-CPU
// counters in the kernel, was 3% of the relay's CPU. A reading younger
// than freshFor answers yes when, with everything released since it
// counted as written, more than freshSlack would still be left above the
// reserve; nearer the reserve, and for every no, free space is read
// afresh, so a refusal or a close call is never made on an old figure.
const (
	freshFor   = time.Millisecond
	freshSlack = 64 << 20
)

// roomLocked reports whether n more bytes fit above the reserve (see
// freshFor for when it reads free space); g.mu serializes it with the
// in-flight count.
func (g *Guard) roomLocked(n int64) bool {
	if !g.refusing && !g.readAt.IsZero() && time.Since(g.readAt) < freshFor &&
		g.readFree-g.released-g.inflight-max(n, 0) >= g.reserve+freshSlack {
		return true
	}
	free, err := g.statfs()
	if err == nil {
		g.readFree, g.readAt, g.released = free, time.Now(), 0
	} else {
		g.readAt = time.Time{}
	}
	if err != nil {
		if !g.statErr {
			g.log.Error("diskspace: cannot read free space; refusing new mail", "dir", g.dir, "err", err)
		}
		g.statErr = true
		free = 0
	} else {
		g.statErr = false
	}
	refuse := free-g.inflight-max(n, 0) < g.reserve
	if refuse != g.refusing {
		g.refusing = refuse
		if refuse {
			g.log.Warn("diskspace: free space below the reserve: refusing new mail", "dir", g.dir, "free", free, "in_flight", g.inflight, "reserve", g.reserve)
		} else {
			g.log.Info("diskspace: free space above the reserve again: accepting mail", "dir", g.dir, "free", free)
		}
	}
	return !refuse
}

// Free returns the free space of the directory's filesystem (the ballast
// not counted), the bytes reserved in flight, and the reserve.
func (g *Guard) Free() (free, inflight, reserve int64) {
	free, _ = g.statfs()
	g.mu.Lock()
	defer g.mu.Unlock()
	return free, g.inflight, g.reserve
}

func (g *Guard) statfs() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(g.dir, &st); err != nil {
		return 0, fmt.Errorf("diskspace: statfs %s: %w", g.dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// watch reacts to new files at once (inotify) and reads free space every
// poll until Close.
func (g *Guard) watch() {
	defer close(g.done)
	buf := make([]byte, 64<<10)
	fds := []unix.PollFd{{Fd: int32(g.inotify), Events: unix.POLLIN}}
	ms := max(int(g.poll/time.Millisecond), 1)
	for {
		select {
		case <-g.stop:
			return
		default:
		}
		unix.Poll(fds, ms)
		for {
			n, err := unix.Read(g.inotify, buf)
			if n <= 0 || err != nil {
				break
			}
			g.events(buf[:n])
		}
		g.tick(true)
	}
}

// events handles a buffer of inotify events.
func (g *Guard) events(b []byte) {
	for len(b) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
		end := unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(b) {
			return
		}
		name := cString(b[unix.SizeofInotifyEvent:end])
		b = b[end:]
		switch {
		case ev.Mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0:
			g.untrack(name)
		case ev.Mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0:
			g.track(name)
		case ev.Mask&unix.IN_MODIFY != 0:
			if af := g.files[name]; af != nil && !af.full {
				g.allocate(name, af)
			}
		}
	}
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// track starts allocating name if Prealloc wants it.
func (g *Guard) track(name string) {
	if _, ok := g.files[name]; ok {
		return
	}
	step := g.prealloc(name)
	if step <= 0 {
		return
	}
	f, err := os.OpenFile(filepath.Join(g.dir, name), os.O_RDWR, 0)
	if err != nil {
		return // gone already
	}
	af := &allocFile{f: f, step: step}
	g.files[name] = af
	g.allocate(name, af)
}

func (g *Guard) untrack(name string) {
	if af := g.files[name]; af != nil {
		af.f.Close() // an open descriptor would keep a deleted file's blocks
		delete(g.files, name)
	}
}

// allocate extends af's allocation: to the first step at first, then by
// another step whenever the writes have passed the middle of the last
// one. fallocate with mode 0 allocates holes only and never changes data,
// so it is safe while Badger writes through its map.
func (g *Guard) allocate(name string, af *allocFile) {
	var st unix.Stat_t
	if err := unix.Fstat(int(af.f.Fd()), &st); err != nil || st.Nlink == 0 {
		g.untrack(name)
		return
	}
	size := st.Size
	if size == 0 {
		return // created, not yet sized: the IN_MODIFY of the ftruncate comes
	}
	if af.alloc >= size {
		af.full = true
		return
	}
	want := af.alloc
	switch {
	case af.alloc == 0:
		want = af.step
	case written(af.f, af.alloc-af.step/2) || st.Blocks*512 > af.alloc:
		want = max(af.alloc, st.Blocks*512) + af.step
	}
	want = min(want, size)
	if want <= af.alloc {
		return
	}
	err := fallocate(af.f, want)
	if errors.Is(err, unix.ENOSPC) && g.hasBallst {
		g.removeBallast("no room to allocate " + name)
		err = fallocate(af.f, want)
	}
	if err != nil {
		if !af.warn {
			g.log.Error("diskspace: cannot allocate a database file; it stays sparse for now", "file", name, "bytes", want, "err", err)
			af.warn = true
		}
		return
	}
	af.warn = false
	af.alloc = want
	af.full = want >= size
}

func fallocate(f *os.File, n int64) error {
	for {
		err := unix.Fallocate(int(f.Fd()), 0, 0, n)
		if err != unix.EINTR {
			return err
		}
	}
}

// written reports whether a file has data at off: a few bytes there are
// not all zero. Badger writes its logs front to back, and allocated but
// unwritten blocks read as zeros.
func written(f *os.File, off int64) bool {
	var b [256]byte
	n, _ := f.ReadAt(b[:], max(off, 0))
	for _, c := range b[:n] {
		if c != 0 {
			return true
		}
	}
	return false
}

// tick reads free space, deletes or re-creates the ballast, and extends
// the allocation of files that are being written. Only the watcher says
// that the ballast is spent: at Open the caller decides what a short disk
// means (the spool refuses to open with a line of its own).
func (g *Guard) tick(watcher bool) {
	for name, af := range g.files {
		if !af.full {
			g.allocate(name, af)
		}
	}
	free, err := g.statfs()
	if err != nil {
		return
	}
	if free < g.lowWater {
		if g.hasBallst {
			g.removeBallast("free space is low")
		} else if watcher && !g.lowLogged {
			g.log.Error("diskspace: the disk is almost full and the ballast is spent: free space now before the database runs out", "dir", g.dir, "free", free)
			g.lowLogged = true
		}
		return
	}
	if !g.hasBallst && g.ballast > 0 && free >= max(g.reserve, g.lowWater)+g.ballast+g.ballast/2 {
		g.createBallast()
	}
}

func (g *Guard) removeBallast(why string) {
	if !g.hasBallst {
		return
	}
	err := os.Remove(filepath.Join(g.dir, BallastName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		g.log.Error("diskspace: cannot delete the ballast", "dir", g.dir, "err", err)
		return
	}
	g.hasBallst = false
	g.log.Warn("diskspace: ballast deleted: "+why, "dir", g.dir, "bytes", g.ballast)
}

// createBallast allocates the ballast under a temporary name and renames
// it, so a ballast file is always whole.
func (g *Guard) createBallast() {
	tmp := filepath.Join(g.dir, BallastName+".new")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		g.log.Error("diskspace: cannot create the ballast", "dir", g.dir, "err", err)
		return
	}
	err = fallocate(f, g.ballast)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(g.dir, BallastName))
	}
	if err != nil {
		os.Remove(tmp)
		g.log.Warn("diskspace: cannot create the ballast", "dir", g.dir, "err", err)
		return
	}
	g.hasBallst = true
	g.lowLogged = false
	g.log.Info("diskspace: ballast in place", "dir", g.dir, "bytes", g.ballast)
}
