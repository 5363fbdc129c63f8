package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relay-mta/relay/relay/accept"
)

// Default limits, used when the corresponding Server field is zero. They
// follow Postfix where RFC 5321 leaves the choice to the server.
const (
	DefaultMaxLineLength        = 2048             // command line, CRLF excluded (Postfix line_length_limit)
	DefaultMaxRecipients        = 100              // RFC 5321 §4.5.3.1.8 minimum
	DefaultMaxMessageSize       = 25 << 20         // bytes after dot-unstuffing
	DefaultMaxErrors            = 10               // 5xx replies before 421 and close
	DefaultMaxConnections       = 500              // concurrent connections per Server
	DefaultMaxConnsPerIP        = 50               // concurrent connections from one client address (Postfix's default)
	DefaultMaxConnsPerTrustedIP = 250              // the same for a Trusted address
	DefaultStressTimeout        = 10 * time.Second // command timeout of outside sessions under stress (Postfix: ${stress?10})
	DefaultMaxCommands          = 10000            // commands in one session
	DefaultMaxSessionRcpt       = 1000             // accepted RCPTs in one session
	DefaultSessionTimeout       = 30 * time.Minute // whole session, however busy
	DefaultTarpitAfter          = 3                // refused RCPTs before replies slow down
	DefaultTarpitDelay          = time.Second      // added per further refusal, up to maxTarpit
	maxTarpit                   = 10 * time.Second
	DefaultCommandTimeout       = 5 * time.Minute  // RFC 5321 §4.5.3.2.7
	DefaultDataTimeout          = 10 * time.Minute // RFC 5321 §4.5.3.2.6, per read
	maxAuthLineLength           = 12288            // RFC 4954 §4
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("smtpd: server closed")

// Server is an SMTP server. Set the fields before calling Serve; they must
// not change afterwards.
type Server struct {
	// Hostname is used in the greeting and the EHLO reply.
	Hostname string
	Backend  Backend
	Logger   *slog.Logger // nil: discard

	// TLSConfig enables STARTTLS (and is used by implicit-TLS listeners
	// wrapped with tls.NewListener by the caller). nil: no STARTTLS.
	TLSConfig *tls.Config
	// EnableAuth advertises and accepts AUTH PLAIN and LOGIN. AUTH is only
	// offered inside TLS unless AllowInsecureAuth is set (anywhere), or
	// LoopbackIsSecure is set and the client is on a loopback address
	// (the connection never leaves the machine; Dovecot's rule).
	EnableAuth        bool
	AllowInsecureAuth bool
	LoopbackIsSecure  bool

	MaxLineLength  int
	MaxRecipients  int
	MaxMessageSize int64
	MaxErrors      int
	MaxConnections int
	CommandTimeout time.Duration
	DataTimeout    time.Duration
	// MaxConnsPerIP limits concurrent connections from one client
	// address, so one host cannot take every slot; an address for which
	// Trusted returns true (the relay's own networks) is held to
	// MaxConnsPerTrustedIP instead, larger but not unlimited.
	MaxConnsPerIP        int
	MaxConnsPerTrustedIP int
	// Trusted reports whether a client address is privileged (the relay's
	// networks). A session is privileged from its start when Trusted says
	// so, and from a successful AUTH on; every other session is an outside
	// one. nil: nobody is trusted by address.
	Trusted func(netip.Addr) bool
	// ReservedConnections of the MaxConnections slots are kept for
	// privileged sessions: outside sessions together hold at most
	// MaxConnections-ReservedConnections, so a flood of outside
	// connections never locks out the relay's own clients. 0: a tenth of
	// MaxConnections; negative: none.
	ReservedConnections int
	// From StressConnections open sessions on (0: three quarters of
	// MaxConnections) the server is under stress, as Postfix's stress
	// mode: outside sessions wait StressTimeout (0: 10s) rather than
	// CommandTimeout for a command, and those idle longer are closed as
	// new connections arrive. At any load, a connection that finds no
	// free slot closes the longest-idle outside session to take its place
	// ("421 4.7.0 closing idle session, server busy").
	StressConnections int
	StressTimeout     time.Duration
	// MaxCommands ends a session after this many commands.
	MaxCommands int
	// MaxSessionRcpts limits accepted recipients over a whole session.
	MaxSessionRcpts int
	// SessionTimeout bounds a whole session: a client that trickles a
	// byte at a time never trips the idle timeouts, but trips this.
	SessionTimeout time.Duration
	// After TarpitAfter refused recipients in a session, each further
	// refusal is answered TarpitDelay later than the one before (up to
	// 10s): address harvesting becomes slow. Negative disables.
	TarpitAfter int
	TarpitDelay time.Duration

	// Metrics, if set, is told about refusals and accepted messages.
	Metrics Metrics

	group  accept.Group
	mu     sync.Mutex
	active atomic.Int64
	perIP  map[netip.Addr]int // under mu
	// sessions are the admitted connections, for the accounting of
	// slots; under mu.
	sessions map[*conn]struct{}
	idle     chan net.Conn // to a worker waiting for its next connection; made under mu
}

// workerIdle is how long a connection's goroutine waits for the next
// connection before it exits. Reusing goroutines spares each connection
// growing a fresh stack to the depth of a session, copying it each time:
// 2-3% of the CPU per message when every message comes on a connection
// of its own.
const workerIdle = 2 * time.Second

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return s.Logger
}

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Serve accepts connections on l until Shutdown or Close; each connection
// is served on a goroutine of its own (which may have served an earlier
// one). Connections from a listener made with
// tls.NewListener are implicit TLS (RFC 8314).
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.idle == nil {
		s.idle = make(chan net.Conn)
	}
	s.mu.Unlock()
	return s.group.Serve(l, "smtpd", s.logger(), ErrServerClosed, func(nc net.Conn) {
		select {
		case s.idle <- nc:
		default:
			go s.worker(nc)
		}
	})
}

// worker serves nc, then further connections handed over on s.idle until
// none comes for workerIdle.
func (s *Server) worker(nc net.Conn) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		s.ServeConn(nc)
		s.group.Done()
		t.Reset(workerIdle)
		select {
		case nc = <-s.idle:
		case <-t.C:
			return
		}
	}
}

// ServeConn serves one connection and returns when it is closed. A
// *tls.Conn is treated as implicit TLS.
func (s *Server) ServeConn(nc net.Conn) {
	c := newConn(s, nc)
	defer s.group.Add(c)()
	s.active.Add(1)
	defer s.active.Add(-1)
	ip := addrIP(nc.RemoteAddr())
	c.ip = ip
	c.trusted.Store(s.Trusted != nil && s.Trusted(ip))
	if refuse := s.admit(c); refuse != nil {
		c.serve(refuse)
		return
	}
	defer s.leave(c)
	c.serve(nil)
}

// minEvictIdle is how long an outside session must have waited for a
// command before a new outside connection may take its slot: a working
// client is never that slow between commands, an idle one is.
const minEvictIdle = time.Second

// admit takes a slot for c, closing the longest-idle outside session
// when that is the only way, or returns the refusal to send.
func (s *Server) admit(c *conn) *Reply {
	maxConns := orDefault(s.MaxConnections, DefaultMaxConnections)
	reserved := s.ReservedConnections
	switch {
	case reserved == 0:
		reserved = maxConns / 10
	case reserved < 0:
		reserved = 0
	}
	stressAt := orDefault(s.StressConnections, maxConns*3/4)
	now := time.Now()
	trusted := c.trusted.Load()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP == nil {
		s.perIP = make(map[netip.Addr]int)
		s.sessions = make(map[*conn]struct{})
	}
	open, outside := 0, 0
	for o := range s.sessions {
		if o.evicted() {
			continue
		}
		open++
		if !o.trusted.Load() {
			outside++
		}
	}
	if open+1 >= stressAt {
		// Under stress with c: outside sessions idle past the short timeout
		// go now, whatever their reads were promised when the load was low.
		for o := range s.sessions {
			if !o.trusted.Load() && !o.evicted() && o.idleFor(now) >= s.stressTimeout() {
				o.evict()
				open--
				outside--
			}
		}
	}
	perIPMax := orDefault(s.MaxConnsPerIP, DefaultMaxConnsPerIP)
	if trusted {
		perIPMax = orDefault(s.MaxConnsPerTrustedIP, DefaultMaxConnsPerTrustedIP)
	}
	if s.perIP[c.ip] >= perIPMax {
		r := reply(421, "4.7.0", "%s Too many connections from your address, try again later", s.Hostname)
		return &r
	}
	if open >= maxConns || (!trusted && outside >= maxConns-reserved) {
		minIdle := minEvictIdle
		if trusted {
			minIdle = 0 // the reserved share is theirs: any idle outsider yields
		}
		victim := s.longestIdleOutsideLocked(now, minIdle)
		if victim == nil {
			r := reply(421, "4.7.0", "%s Too many connections, try again later", s.Hostname)
			return &r
		}
		victim.evict()
	}
	s.perIP[c.ip]++
	s.sessions[c] = struct{}{}
	return nil
}

// leave gives back c's slot.
func (s *Server) leave(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP[c.ip]--; s.perIP[c.ip] <= 0 {
		delete(s.perIP, c.ip)
	}
	delete(s.sessions, c)
}

// longestIdleOutsideLocked is the outside session that has waited
// longest for a command, at least minIdle; nil when there is none.
func (s *Server) longestIdleOutsideLocked(now time.Time, minIdle time.Duration) *conn {
	var (
		victim *conn
		most   = minIdle
	)
	for o := range s.sessions {
		if o.trusted.Load() || o.evicted() {
			continue
		}
		if d := o.idleFor(now); d >= most && d > 0 {
			victim, most = o, d
		}
	}
	return victim
}

// stressed reports whether the server is under stress: outside sessions
// then get StressTimeout to send a command.
func (s *Server) stressed() bool {
	maxConns := orDefault(s.MaxConnections, DefaultMaxConnections)
	return s.active.Load() >= int64(orDefault(s.StressConnections, maxConns*3/4))
}

func (s *Server) stressTimeout() time.Duration {
	return orDefault(s.StressTimeout, DefaultStressTimeout)
}

// addrIP is the IP of a connection's remote address (the zero Addr for
// other kinds of address).
func addrIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

func (s *Server) Connections() int { return int(s.active.Load()) }

// Shutdown stops accepting connections, tells idle clients "421 4.3.2" and
// lets sessions that are inside a command or a DATA transfer finish. When
// ctx ends first, the remaining connections are closed and ctx's error is
// returned.
func (s *Server) Shutdown(ctx context.Context) error { return s.group.Shutdown(ctx) }

// Close closes all listeners and connections at once.
func (s *Server) Close() error {
	s.group.Close()
	return nil
}
