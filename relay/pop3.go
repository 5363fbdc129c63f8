package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/relay-mta/relay/relay/pop3d"
	"github.com/relay-mta/relay/relay/users"
	"github.com/relay-mta/relay/spool"
)

// POP3: the users of the users file read their local mailboxes (the
// spool's x/<user>/ entries, written on local delivery) over pop3d. The
// credentials are the same as for SMTP AUTH.

// newPOP3Server prepares the POP3 server; listenPOP3 and servePOP3 run it.
func (r *Relay) newPOP3Server(tlsConfig *tls.Config) *pop3d.Server {
	return &pop3d.Server{
		Hostname:          r.cfg.Hostname,
		Backend:           &pop3Backend{r: r, inUse: map[string]bool{}},
		Logger:            r.log,
		TLSConfig:         tlsConfig,
		AllowInsecureAuth: r.cfg.AllowInsecureAuth,
		// USER and PASS from loopback clients need no TLS (Dovecot's
		// rule), so the default relay's mailboxes can be read at once.
		LoopbackIsSecure: true,
		// Failed logins are slowed and banned per address by the relay's
		// throttle, shared with SMTP AUTH (pop3Backend.Login); pop3d's own
		// delay would only add to it. pop3d still hangs up after
		// MaxAuthFailures on one connection.
		AuthFailureDelay: -1,
	}
}

// listenPOP3 opens the [pop3] listen and listen_tls listeners. Called a
// second time it does nothing.
func (r *Relay) listenPOP3() error {
	if r.pop3Listeners != nil {
		return nil
	}
	var ls []net.Listener
	fail := func(err error) error {
		for _, l := range ls {
			l.Close()
		}
		return err
	}
	for _, addr := range r.cfg.POP3.Listen {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fail(fmt.Errorf("relay: pop3 listen: %w", err))
		}
		ls = append(ls, l)
	}
	for _, addr := range r.cfg.POP3.ListenTLS {
		if r.pop3.TLSConfig == nil {
			return fail(fmt.Errorf("relay: pop3 listen_tls %s: no TLS certificate configured", addr))
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fail(fmt.Errorf("relay: pop3s listen: %w", err))
		}
		ls = append(ls, tls.NewListener(l, r.pop3.TLSConfig))
	}
	r.pop3Listeners = append([]net.Listener{}, ls...) // non-nil: listening
	return nil
}

// POP3Addrs returns the addresses the POP3 listeners are bound to.
func (r *Relay) POP3Addrs() []string {
	var out []string
	for _, l := range r.pop3Listeners {
		out = append(out, l.Addr().String())
	}
	return out
}

// servePOP3 serves the POP3 listeners until shutdownPOP3. A listener that
// fails is logged; mail keeps flowing without it.
func (r *Relay) servePOP3() {
	for _, l := range r.pop3Listeners {
		go func() {
			if err := r.pop3.Serve(l); err != nil && !errors.Is(err, pop3d.ErrServerClosed) {
				r.log.Error("relay: pop3 listener failed", "addr", l.Addr().String(), "err", err)
			}
		}()
	}
}

// shutdownPOP3 closes the listeners and ends idle sessions without
// deleting anything (see pop3d.Server.Shutdown).
func (r *Relay) shutdownPOP3(ctx context.Context) {
	if err := r.pop3.Shutdown(ctx); err != nil {
		r.log.Warn("relay: pop3 sessions cut off at shutdown", "err", err)
	}
}

// pop3Backend logs users in and locks their mailbox for the session.
type pop3Backend struct {
	r *Relay

	mu    sync.Mutex
	inUse map[string]bool // mailboxes with a session
}

func (b *pop3Backend) Login(c pop3d.ConnInfo, username, password string) (pop3d.Maildrop, error) {
	// Failed logins per address are shared with SMTP AUTH: guessing is
	// slowed, then banned, whichever protocol it uses.
	ip := addrOf(c.RemoteAddr)
	if !b.r.logins.begin(ip) {
		b.r.log.Warn("pop3: login refused: address banned after failed logins", "user", username, "client", c.RemoteAddr.String())
		return nil, &pop3d.BlockedError{Reason: b.r.logins.refusal(ip)}
	}
	// Authenticate costs the same bcrypt work for unknown names, so the
	// response time does not tell which names exist.
	if b.r.users == nil || !b.r.users.Authenticate(username, password) {
		delay := b.r.logins.failed(ip)
		b.r.log.Info("pop3: authentication failed", "user", username, "client", c.RemoteAddr.String(), "delay", delay)
		time.Sleep(delay)
		return nil, pop3d.ErrAuthFailed
	}
	b.r.logins.succeeded(ip)
	// The mailbox key is the user name in lower case, as the router names
	// local mailboxes.
	name, err := users.NormalizeName(username)
	if err != nil {
		return nil, pop3d.ErrAuthFailed
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.inUse[name] {
		return nil, fmt.Errorf("mailbox %s: %w", name, pop3d.ErrInUse)
	}
	b.inUse[name] = true
	return &maildrop{b: b, user: name}, nil
}

// maildrop is one session's view of a local mailbox.
type maildrop struct {
	b       *pop3Backend
	user    string
	entries []spool.MailboxEntry
}

func (m *maildrop) Messages() ([]pop3d.MessageInfo, error) {
	entries, err := m.b.r.spool.ListMailbox(m.user)
	if err != nil {
		return nil, err
	}
	m.entries = entries
	out := make([]pop3d.MessageInfo, len(entries))
	for i, e := range entries {
		// The mailbox sequence number is unique, never reused, and
		// survives restarts: a stable POP3 unique-id.
		out[i] = pop3d.MessageInfo{UID: strconv.FormatUint(e.Seq, 10), Size: e.Size}
	}
	return out, nil
}

func (m *maildrop) Message(i int) (io.ReadCloser, error) {
	b, err := m.b.r.spool.OpenMailboxMessage(m.user, m.entries[i].Seq)
	if err != nil {
		return nil, err
	}
	return bodyReadCloser{b.NewReader(), b}, nil
}

// bodyReadCloser reads a spooled message and closes it.
type bodyReadCloser struct {
	io.Reader
	io.Closer
}

func (m *maildrop) Delete(indexes []int) error {
	seqs := make([]uint64, len(indexes))
	for k, i := range indexes {
		seqs[k] = m.entries[i].Seq
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.b.r.spool.DeleteMailboxEntries(ctx, m.user, seqs); err != nil {
		return err
	}
	m.b.r.log.Info("pop3: messages deleted", "user", m.user, "count", len(seqs))
	return nil
}

func (m *maildrop) Close() {
	m.b.mu.Lock()
	delete(m.b.inUse, m.user)
	m.b.mu.Unlock()
}

// addrOf is the IP of a client address (the zero Addr for others).
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}
