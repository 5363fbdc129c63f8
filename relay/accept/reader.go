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
}

func (r *Reader) Read(p []byte) (int, error) {
	dl := time.Now().Add(r.Timeout)
	if !r.Limit.IsZero() && r.Limit.Before(dl) {
		dl = r.Limit
	}
	r.Conn.SetReadDeadline(dl)
	if r.Group.Stopping() && r.Idle.Load() {
		return 0, ErrStopping
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

// Stopped reports whether err ended a read because the group is
// stopping, rather than because the peer went quiet or away.
func (r *Reader) Stopped(err error) bool {
	return errors.Is(err, ErrStopping) || (r.Group.Stopping() && errors.Is(err, os.ErrDeadlineExceeded))
}
