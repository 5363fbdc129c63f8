package accept

import (
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
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
