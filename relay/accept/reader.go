package accept

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// ErrStopping ends a read of a session that waits for a command while
// its Group is stopping.
var ErrStopping = errors.New("server stopping")

// ErrEvicted ends a read of a session that waits for a command after
// Evict: the server wants its slot for another client.
var ErrEvicted = errors.New("session evicted to make room")

// Reader is the reading side of a session's connection. Before every
// read it sets a fresh read deadline, so that a timeout measures the
// peer's silence, not the length of the session. While the session waits
// for a command (Idle), a stopping Group ends the read: Read checks the
// group after setting the deadline, and Shutdown sets the group stopping
// before it calls WakeIfIdle, which moves the deadline into the past, so
// one of the two always stops an idle read.
type Reader struct {
	Conn    net.Conn      // deadlines are set here (under TLS: the TCP connection)
	Src     io.Reader     // what is read: Conn, or the TLS layer over it
	Group   *Group        // the server's sessions
	Timeout time.Duration // each read's deadline, from the time it starts
	Limit   time.Time     // no deadline later than this; zero: none
	Idle    atomic.Bool   // the session waits for a command, nothing buffered
	Evicted atomic.Bool   // set by Evict: end the session at its next wait for a command
}

func (r *Reader) Read(p []byte) (int, error) {
	dl := time.Now().Add(r.Timeout)
	if !r.Limit.IsZero() && r.Limit.Before(dl) {
		dl = r.Limit
	}
	r.Conn.SetReadDeadline(dl)
	if r.Idle.Load() {
		// Checked after the deadline is set: Shutdown and Evict set their
		// flag before they move the deadline, so one of the two ends the read.
		if r.Group.Stopping() {
			return 0, ErrStopping
		}
		if r.Evicted.Load() {
			return 0, ErrEvicted
		}
	}
	return r.Src.Read(p)
}

// WakeIfIdle ends a read that waits for a command: the part of
// Session.WakeIfIdle that concerns the connection.
func (r *Reader) WakeIfIdle() {
	if r.Idle.Load() {
		r.Conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// Evict ends the session's wait for a command, now if it is waiting,
// else when it next waits: the server closes it to make room.
func (r *Reader) Evict() {
	r.Evicted.Store(true)
	r.WakeIfIdle()
}

// Stopped reports whether err ended a read because the group is
// stopping, rather than because the peer went quiet or away.
func (r *Reader) Stopped(err error) bool {
	return errors.Is(err, ErrStopping) || (r.Group.Stopping() && errors.Is(err, os.ErrDeadlineExceeded))
}
