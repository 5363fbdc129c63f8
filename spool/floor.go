package spool

import (
	"sync"
	"sync/atomic"
	"time"
)

// floorGate keeps the promise of RaiseFloor without ever blocking a
// writer: a writer of schedule keys registers in the current epoch's
// counter before it reads the floor and leaves after its commit;
// raise stores the new floor, moves to the next epoch, and waits until the
// writers of the previous epoch — the only ones that may have read the
// old floor — have all committed. (An RWMutex would do the same, but a
// waiting writer lock stops every new enqueue behind it.)
type floorGate struct {
	floor  atomic.Uint64
	epoch  atomic.Uint32
	active [2]atomic.Int64
	mu     sync.Mutex // one raise at a time
}

// enter registers a writer and returns its slot for leave.
func (g *floorGate) enter() uint32 {
	for {
		e := g.epoch.Load()
		g.active[e&1].Add(1)
		if g.epoch.Load() == e {
			return e & 1
		}
		g.active[e&1].Add(-1) // the epoch moved meanwhile: join the new one
	}
}

func (g *floorGate) leave(slot uint32) { g.active[slot].Add(-1) }

// at returns t as a schedule time, not below the floor; call it between
// enter and leave.
func (g *floorGate) at(t time.Time) uint64 { return max(dueNanos(t), g.floor.Load()) }

// raise moves the floor up to t and returns once every writer that may
// have read a lower floor has left.
func (g *floorGate) raise(t time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := dueNanos(t)
	if n <= g.floor.Load() {
		return
	}
	g.floor.Store(n)
	old := g.epoch.Add(1) - 1
	for g.active[old&1].Load() != 0 {
		time.Sleep(20 * time.Microsecond)
	}
}
