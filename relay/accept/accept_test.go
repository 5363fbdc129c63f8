package accept

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "too many open files" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// scripted returns its results in order, then stays closed.
type scripted struct {
	net.Listener
	results []error
	conns   int
}

func (l *scripted) Accept() (net.Conn, error) {
	if len(l.results) == 0 {
		return nil, net.ErrClosed
	}
	err := l.results[0]
	l.results = l.results[1:]
	if err != nil {
		return nil, err
	}
	l.conns++
	c, _ := net.Pipe()
	return c, nil
}

func TestLoop(t *testing.T) {
	errClosed := errors.New("server closed")
	log := slog.New(slog.DiscardHandler)

	// A temporary error is waited out; connections reach handle; a
	// failure while stopping is the server's "closed".
	var stopping atomic.Bool
	l := &scripted{results: []error{nil, timeoutErr{}, nil}}
	handled := 0
	err := Loop(l, "test", log, stopping.Load, errClosed, func(c net.Conn) {
		handled++
		c.Close()
		if handled == 2 {
			stopping.Store(true)
		}
	})
	if err != errClosed || handled != 2 {
		t.Errorf("Loop = %v after %d connections, want %v after 2", err, handled, errClosed)
	}

	// Any other failure ends the loop with that error.
	boom := errors.New("boom")
	l = &scripted{results: []error{boom}}
	if err := Loop(l, "test", log, func() bool { return false }, errClosed, func(net.Conn) {}); err != boom {
		t.Errorf("Loop = %v, want %v", err, boom)
	}
}

type fakeSession struct{ woken, aborted atomic.Int32 }

func (f *fakeSession) WakeIfIdle() { f.woken.Add(1) }
func (f *fakeSession) Abort()      { f.aborted.Add(1) }

// TestGroup: Shutdown closes the listeners, wakes the sessions and waits
// for the connections being served; Serve after it is refused.
func TestGroup(t *testing.T) {
	var g Group
	errClosed := errors.New("server closed")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan net.Conn, 1)
	serveErr := make(chan error, 1)
	go func() {
		serveErr <- g.Serve(l, "test", slog.New(slog.DiscardHandler), errClosed, func(c net.Conn) { served <- c })
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn := <-served
	s := &fakeSession{}
	remove := g.Add(s)

	shut := make(chan error, 1)
	go func() { shut <- g.Shutdown(context.Background()) }()
	if err := <-serveErr; err != errClosed {
		t.Errorf("Serve = %v, want %v", err, errClosed)
	}
	select {
	case <-g.Stopped():
	case <-time.After(5 * time.Second):
		t.Fatal("Stopped not closed")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a connection still being served", err)
	case <-time.After(50 * time.Millisecond):
	}
	remove()
	conn.Close()
	g.Done()
	if err := <-shut; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if s.woken.Load() != 1 || s.aborted.Load() != 0 {
		t.Errorf("session woken %d, aborted %d times; want 1 and 0", s.woken.Load(), s.aborted.Load())
	}
	if !g.Stopping() {
		t.Error("not stopping after Shutdown")
	}
	if err := g.Serve(l, "test", slog.New(slog.DiscardHandler), errClosed, nil); err != errClosed {
		t.Errorf("Serve after Shutdown = %v", err)
	}
	g.Close() // twice is fine
}
