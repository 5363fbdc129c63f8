package accept

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
)

// Session is a connection being served, as a Group sees it.
type Session interface {
	WakeIfIdle() // end the session if it is waiting for a command
	Abort()      // close its connection at once
}

// Group tracks the listeners and sessions of one server, so that
// Shutdown and Close reach all of them. The zero value is ready to use.
type Group struct {
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[Session]struct{}
	stopped   chan struct{} // closed when stopping; made on first use
	stopping  atomic.Bool
	running   sync.WaitGroup // connections handed out and not yet Done
}

// Serve runs Loop on l until the group stops, when it returns closed.
// handle gets each connection; Done must be called once for each when it
// has been served.
func (g *Group) Serve(l net.Listener, name string, log *slog.Logger, closed error, handle func(net.Conn)) error {
	g.mu.Lock()
	if g.stopping.Load() {
		g.mu.Unlock()
		return closed
	}
	if g.listeners == nil {
		g.listeners = make(map[net.Listener]struct{})
	}
	g.listeners[l] = struct{}{}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.listeners, l)
		g.mu.Unlock()
	}()
	return Loop(l, name, log, g.stopping.Load, closed, func(nc net.Conn) {
		g.running.Add(1)
		handle(nc)
	})
}

// Done marks one connection from Serve as served.
func (g *Group) Done() { g.running.Done() }

// Add registers a session until the returned function is called.
func (g *Group) Add(s Session) (remove func()) {
	g.mu.Lock()
	if g.sessions == nil {
		g.sessions = make(map[Session]struct{})
	}
	g.sessions[s] = struct{}{}
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		delete(g.sessions, s)
		g.mu.Unlock()
	}
}

// Stopping reports whether Shutdown or Close has been called.
func (g *Group) Stopping() bool { return g.stopping.Load() }

// Stopped is closed when Shutdown or Close is called.
func (g *Group) Stopped() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stoppedLocked()
}

func (g *Group) stoppedLocked() chan struct{} {
	if g.stopped == nil {
		g.stopped = make(chan struct{})
	}
	return g.stopped
}

// stop marks the group as stopping and closes its listeners; g.mu held.
func (g *Group) stopLocked() {
	if !g.stopping.Swap(true) {
		close(g.stoppedLocked())
	}
	for l := range g.listeners {
		l.Close()
	}
}

// Shutdown stops accepting, wakes idle sessions, and waits until every
// connection is served. When ctx ends first, the rest are closed and
// ctx's error is returned.
func (g *Group) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.stopLocked()
	for s := range g.sessions {
		s.WakeIfIdle()
	}
	g.mu.Unlock()
	done := make(chan struct{})
	go func() { g.running.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		g.Close()
		<-done
		return ctx.Err()
	}
}

// Close closes every listener and connection at once.
func (g *Group) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopLocked()
	for s := range g.sessions {
		s.Abort()
	}
}
