package relay

import (
	"log/slog"
	"sync"
	"syscall"
	"time"
)

// diskGuard keeps new mail out while data_dir is short of space, as
// Postfix's queue_minfree does. It is more than politeness here: Badger
// writes its log through memory-mapped files, and a page that cannot be
// backed by disk kills the process (SIGBUS) instead of failing a write.
// So the relay answers 452 4.3.1 while free space is below the reserve,
// keeps every message it already has, and accepts again by itself once
// space returns.
type diskGuard struct {
	dir     string
	reserve int64
	log     *slog.Logger

	mu      sync.Mutex
	checked time.Time
	free    int64
	short   bool // the last answer, to log changes once
}

// guardRecheck bounds how stale the free-space figure may be; statfs is
// cheap, but a burst of sessions need not call it each.
const guardRecheck = 200 * time.Millisecond

func newDiskGuard(dir string, reserve, maxMessage int64, log *slog.Logger) *diskGuard {
	if reserve == 0 {
		reserve = 4*maxMessage + 64<<20
	}
	return &diskGuard{dir: dir, reserve: reserve, log: log}
}

// room reports whether a message of need bytes may be accepted now.
func (g *diskGuard) room(need int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now := time.Now(); now.Sub(g.checked) > guardRecheck {
		var st syscall.Statfs_t
		if err := syscall.Statfs(g.dir, &st); err != nil {
			g.log.Error("relay: cannot read free disk space; refusing mail", "dir", g.dir, "err", err)
			g.free = 0
		} else {
			g.free = int64(st.Bavail) * st.Bsize
		}
		g.checked = now
	}
	short := g.free-need < g.reserve
	if short != g.short {
		g.short = short
		if short {
			g.log.Warn("relay: data_dir is short of space: refusing new mail with 452 4.3.1", "dir", g.dir, "free", g.free, "reserve", g.reserve)
		} else {
			g.log.Info("relay: space is back in data_dir: accepting mail again", "dir", g.dir, "free", g.free)
		}
	}
	return !short
}
