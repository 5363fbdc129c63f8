package pop3d

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relay-mta/relay/relay/accept"
)

// Default limits, used when the corresponding Server field is zero.
const (
	// DefaultMaxLineLength is the longest command line, CRLF excluded.
	// RFC 2449 §4 allows 255 octets with the CRLF; more room costs nothing
	// and keeps long passwords working.
	DefaultMaxLineLength = 512
	// DefaultIdleTimeout is the least autologout timer RFC 1939 §3
	// allows. It also bounds a client that stops reading a response.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultMaxErrors is the number of refused commands before the
	// server hangs up.
	DefaultMaxErrors = 10
	// DefaultMaxAuthFailures is the number of failed logins on one
	// connection before the server hangs up.
	DefaultMaxAuthFailures = 3
	// DefaultAuthFailureDelay is the wait before answering a client
	// address's first failed login; each further failure from the same
	// address within authFailureMemory doubles it, up to maxAuthDelay.
	DefaultAuthFailureDelay = time.Second
	// DefaultMaxConnections is the number of concurrent connections per
	// Server.
	DefaultMaxConnections = 200

	maxAuthDelayFactor = 16               // the delay stops doubling at 16 times the first
	authFailureMemory  = 15 * time.Minute // failures older than this are forgotten
	maxFailureRecords  = 4096             // client addresses remembered at most
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("pop3d: server closed")

// Server is a POP3 server. Set the fields before calling Serve; they must
// not change afterwards.
type Server struct {
	// Hostname is used in the greeting and the sign-off.
	Hostname string
	Backend  Backend
	Logger   *slog.Logger // nil: discard

	// TLSConfig enables STLS (and is used by implicit-TLS listeners made
	// by the caller with tls.NewListener). nil: no STLS.
	TLSConfig *tls.Config
	// AllowInsecureAuth accepts USER and PASS without TLS from anywhere;
	// for tests.
	AllowInsecureAuth bool
	// LoopbackIsSecure accepts USER and PASS without TLS on connections
	// from a loopback address, as Dovecot does: they never leave the
	// machine.
	LoopbackIsSecure bool

	MaxLineLength   int
	IdleTimeout     time.Duration
	MaxErrors       int
	MaxAuthFailures int
	// AuthFailureDelay is the wait before answering a client address's
	// first failed login (see DefaultAuthFailureDelay). Negative: no wait
	// of the server's own, for a Backend that slows failures itself.
	AuthFailureDelay time.Duration
	MaxConnections   int

	group  accept.Group
	active atomic.Int64

	failMu   sync.Mutex
	failures map[netip.Addr]failRecord
}

// failRecord is the recent failed logins of one client address.
type failRecord struct {
	n    int
	last time.Time
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Serve accepts connections on l until Shutdown or Close; each connection
// is served on its own goroutine. Connections from a listener made with
// tls.NewListener are implicit TLS.
func (s *Server) Serve(l net.Listener) error {
	return s.group.Serve(l, "pop3d", s.logger(), ErrServerClosed, func(nc net.Conn) {
		go func() {
			defer s.group.Done()
			s.ServeConn(nc)
		}()
	})
}

// ServeConn serves one connection and returns when it is closed. A
// *tls.Conn is treated as implicit TLS.
func (s *Server) ServeConn(nc net.Conn) {
	c := newConn(s, nc)
	defer s.group.Add(c)()
	n := s.active.Add(1)
	defer s.active.Add(-1)
	c.serve(n > int64(orDefault(s.MaxConnections, DefaultMaxConnections)))
}

// Shutdown stops accepting connections and closes idle sessions (those
// waiting for a command) without entering the UPDATE state, so nothing is
// deleted; a response being sent is finished first. When ctx ends before
// every connection is gone, the rest are closed and ctx's error is
// returned.
func (s *Server) Shutdown(ctx context.Context) error { return s.group.Shutdown(ctx) }

// Close closes all listeners and connections at once.
func (s *Server) Close() error {
	s.group.Close()
	return nil
}

// authDelay records a failed login from addr and returns how long to wait
// before answering it: the first failure waits AuthFailureDelay, each
// further one within authFailureMemory twice as long as the one before,
// up to maxAuthDelayFactor times the first. Keyed by address rather than
// connection, so that reconnecting does not start over.
func (s *Server) authDelay(addr netip.Addr, now time.Time) time.Duration {
	if s.AuthFailureDelay < 0 {
		return 0
	}
	s.failMu.Lock()
	defer s.failMu.Unlock()
	if s.failures == nil {
		s.failures = make(map[netip.Addr]failRecord)
	}
	if len(s.failures) >= maxFailureRecords {
		for a, r := range s.failures {
			if now.Sub(r.last) > authFailureMemory {
				delete(s.failures, a)
			}
		}
		if len(s.failures) >= maxFailureRecords {
			// Memory stays bounded under a wide attack; the per-connection
			// limit still applies to every client.
			clear(s.failures)
		}
	}
	r := s.failures[addr]
	if now.Sub(r.last) > authFailureMemory {
		r.n = 0
	}
	r.n++
	r.last = now
	s.failures[addr] = r
	base := orDefault(s.AuthFailureDelay, DefaultAuthFailureDelay)
	d := base
	for i := 1; i < r.n && d < maxAuthDelayFactor*base; i++ {
		d *= 2
	}
	return min(d, maxAuthDelayFactor*base)
}

// authSucceeded forgets the failures of addr.
func (s *Server) authSucceeded(addr netip.Addr) {
	s.failMu.Lock()
	delete(s.failures, addr)
	s.failMu.Unlock()
}

// remoteIP is the address failures are counted against.
func remoteIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}
