// Package accept is what the relay's protocol servers (SMTP, POP3) share
// around their sessions: the accept loop, which backs off on temporary
// errors such as running out of file descriptors, the Group of listeners
// and sessions that Shutdown and Close reach, and the Reader under each
// session's buffered reader, which times out a silent peer and ends an
// idle session when the Group stops.
package accept

import (
	"errors"
	"log/slog"
	"net"
	"time"
)

// Loop accepts connections on l and gives each to handle, which must not
// block for long (it starts the connection's goroutine). It returns
// closed when l fails while stopping reports true (the server closed l),
// and l's error otherwise. name prefixes log lines ("smtpd").
func Loop(l net.Listener, name string, log *slog.Logger, stopping func() bool, closed error, handle func(net.Conn)) error {
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if stopping() {
				return closed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Temporary (e.g. EMFILE): back off like net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn(name+": accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		handle(nc)
	}
}
