package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/spool"
)

// Resolver is the part of *net.Resolver the Deliverer uses, so that tests
// and DNS-less networks can supply their own answers.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Deliverer opens SMTP sessions to remote next hops with go-smtp's client
// (docs/design.md §7): it finds the addresses of a hop (explicit addresses, or
// MX records then A/AAAA), tries them in order, applies the hop's TLS
// policy and returns a session that carries any number of messages.
//
// The zero value is usable; set the fields before the first Dial and do
// not change them afterwards.
type Deliverer struct {
	// Hostname is the name given in EHLO; "localhost" when empty.
	Hostname string
	// Resolver answers MX and address lookups; nil means net.DefaultResolver.
	Resolver Resolver
	// RootCAs verifies certificates of hops with tls = "require"; nil
	// means the system roots.
	RootCAs *x509.CertPool
	// DialTimeout bounds each TCP connect (0: 30s); CommandTimeout each
	// command's reply, the greeting and the TLS handshake (0: 5m, RFC 5321
	// §4.5.3.2); DataTimeout the message transfer and the reply after it
	// (0: 10m).
	DialTimeout, CommandTimeout, DataTimeout time.Duration
	// Logger receives per-address failures and opened sessions; nil
	// discards them.
	Logger *slog.Logger
	// Now is the clock that the remaining time of a BY deadline (RFC
	// 2852) is counted on: the one messages were stamped with on arrival.
	// nil: time.Now.
	Now func() time.Time
}

var _ queue.Deliverer = (*Deliverer)(nil)

const (
	defaultDialTimeout    = 30 * time.Second
	defaultCommandTimeout = 5 * time.Minute
	defaultDataTimeout    = 10 * time.Minute
	// quitTimeout bounds the polite QUIT of Close: a peer that does not
	// answer it must not hold a lane's slot.
	quitTimeout = 10 * time.Second
	// maxDialAddrs caps the addresses tried per Dial, like Postfix's
	// smtp_mx_address_limit: a domain publishing dozens of dead MX
	// addresses must not hold a lane for hours per attempt.
	maxDialAddrs = 10
)

func (d *Deliverer) hostname() string {
	if d.Hostname == "" {
		return "localhost"
	}
	return d.Hostname
}

func (d *Deliverer) now() time.Time {
	if d.Now == nil {
		return time.Now()
	}
	return d.Now()
}

func (d *Deliverer) resolver() Resolver {
	if d.Resolver == nil {
		return net.DefaultResolver
	}
	return d.Resolver
}

func (d *Deliverer) logger() *slog.Logger {
	if d.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Logger
}

func orDuration(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

// target is one address to try.
type target struct {
	addr string // "ip:port" to connect to
	// name is the host the address belongs to (MX host, route host, or
	// the domain itself for the implicit MX): the name a certificate must
	// match under tls = "require", and the SNI otherwise.
	name string
}

// Dial implements queue.Deliverer. The addresses of hop are tried in order
// until one gives a session; the error of the last one is returned. A
// *queue.PermanentError means the domain cannot receive mail at all
// (NXDOMAIN: 550, null MX: 556); every other error defers.
func (d *Deliverer) Dial(ctx context.Context, hop queue.Hop) (queue.Session, error) {
	if hop.Local {
		return nil, fmt.Errorf("deliver: hop %q is local, not an SMTP destination", hop.Key)
	}
	if h := d.hostname(); strings.ContainsAny(h, " \t\r\n") {
		return nil, fmt.Errorf("deliver: invalid EHLO name %q", h)
	}
	mode := config.TLSMode(hop.TLS)
	switch mode {
	case "":
		mode = config.TLSOpportunistic
	case config.TLSOpportunistic, config.TLSRequire, config.TLSNone:
	default:
		// Fail closed: an unknown policy might have meant "require".
		return nil, fmt.Errorf("deliver: hop %q: unknown TLS mode %q", hop.Key, hop.TLS)
	}
	targets, err := d.targets(ctx, hop)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, t := range targets {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("deliver: %s: %w", hop.Key, context.Cause(ctx))
		}
		s, err := d.dialTarget(ctx, t, mode)
		if err == nil {
			log := d.logger().With("hop", hop.Key, "addr", t.addr, "name", t.name)
			if s.tls != nil {
				log.Debug("deliver: session opened", "tls", tls.VersionName(s.tls.Version), "verified", mode == config.TLSRequire)
			} else {
				log.Debug("deliver: session opened", "tls", "none")
			}
			return s, nil
		}
		d.logger().Debug("deliver: address failed", "hop", hop.Key, "addr", t.addr, "err", err)
		lastErr = err
	}
	if len(targets) == 1 {
		return nil, lastErr
	}
	return nil, fmt.Errorf("%w (last of %d addresses tried for %s)", lastErr, len(targets), hop.Key)
}

// targets lists the addresses of hop, best first, without duplicates and
// at most maxDialAddrs of them.
func (d *Deliverer) targets(ctx context.Context, hop queue.Hop) ([]target, error) {
	var ts []target
	var err error
	switch {
	case len(hop.Addrs) > 0:
		ts, err = d.addrTargets(ctx, hop.Addrs)
	case hop.MX != "":
		ts, err = d.mxTargets(ctx, hop.MX, hop.Port)
	default:
		err = fmt.Errorf("deliver: hop %q has neither addresses nor an MX name", hop.Key)
	}
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(ts))
	out := ts[:0]
	for _, t := range ts {
		if !seen[t.addr] {
			seen[t.addr] = true
			out = append(out, t)
		}
	}
	if len(out) > maxDialAddrs {
		out = out[:maxDialAddrs]
	}
	return out, nil
}

// addrTargets resolves explicit "host:port" addresses (from the route
// table or an address literal). A name is looked up through the Resolver
// like any other, so that tests and DNS-less networks see one resolver.
// Failures here are deferrals: they mean a broken route entry or DNS
// trouble, which an operator can fix, not a recipient that cannot exist.
func (d *Deliverer) addrTargets(ctx context.Context, addrs []string) ([]target, error) {
	var ts []target
	var lastErr error
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			lastErr = fmt.Errorf("deliver: address %q: %w", a, err)
			continue
		}
		if _, err := netip.ParseAddr(host); err == nil {
			ts = append(ts, target{addr: a, name: host})
			continue
		}
		ips, err := d.resolver().LookupHost(ctx, host)
		if err != nil {
			lastErr = fmt.Errorf("deliver: look up %s: %w", host, err)
			continue
		}
		for _, ip := range ips {
			ts = append(ts, target{addr: net.JoinHostPort(ip, port), name: host})
		}
	}
	if len(ts) == 0 {
		if lastErr == nil {
			lastErr = fmt.Errorf("deliver: no address for %s", strings.Join(addrs, ","))
		}
		return nil, lastErr
	}
	return ts, nil
}

// mxTargets finds the addresses of domain's mail exchangers (RFC 5321 §5.1).
func (d *Deliverer) mxTargets(ctx context.Context, domain string, portNum int) ([]target, error) {
	name := strings.TrimSuffix(strings.ToLower(domain), ".")
	if portNum <= 0 {
		portNum = 25
	}
	port := strconv.Itoa(portNum)
	r := d.resolver()

	mxs, err := r.LookupMX(ctx, name)
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("deliver: MX lookup for %s: %w", name, err)
	}
	// A not-found MX answer may still be a domain with addresses: Go's
	// resolver reports "no MX records" (NODATA) exactly like "no such
	// domain" (NXDOMAIN), so only the address lookup below decides.
	hosts := make([]*net.MX, 0, len(mxs))
	for _, mx := range mxs {
		if mx != nil && strings.TrimSuffix(mx.Host, ".") != "" {
			hosts = append(hosts, mx)
		}
	}
	if len(mxs) > 0 && len(hosts) == 0 {
		return nil, &queue.PermanentError{Code: 556, Err: fmt.Errorf("deliver: %s does not accept mail (null MX, RFC 7505)", name)}
	}

	if len(hosts) == 0 {
		// Implicit MX: the domain itself (RFC 5321 §5.1).
		ips, err := r.LookupHost(ctx, name)
		if err != nil && !isNotFound(err) {
			return nil, fmt.Errorf("deliver: address lookup for %s: %w", name, err)
		}
		if len(ips) == 0 {
			return nil, &queue.PermanentError{Code: 550, Err: fmt.Errorf("deliver: %s: no such domain (no MX or address records)", name)}
		}
		ts := make([]target, len(ips))
		for i, ip := range ips {
			ts[i] = target{addr: net.JoinHostPort(ip, port), name: name}
		}
		return ts, nil
	}

	// RFC 5321 §5.1: equal preferences are tried in random order, to
	// spread the load; lower preferences first.
	rand.Shuffle(len(hosts), func(i, j int) { hosts[i], hosts[j] = hosts[j], hosts[i] })
	slices.SortStableFunc(hosts, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })

	// RFC 5321 §5.1: when we are one of the exchangers, only better ones
	// may be tried, or backup MXs would pass the mail between themselves.
	me := strings.TrimSuffix(strings.ToLower(d.hostname()), ".")
	if i := slices.IndexFunc(hosts, func(mx *net.MX) bool {
		return strings.EqualFold(strings.TrimSuffix(mx.Host, "."), me)
	}); i >= 0 {
		ours := hosts[i].Pref
		hosts = slices.DeleteFunc(hosts, func(mx *net.MX) bool { return mx.Pref >= ours })
		if len(hosts) == 0 {
			return nil, fmt.Errorf("deliver: mail for %s loops back to myself (%s is its best MX)", name, me)
		}
	}

	var ts []target
	var lastErr error
	for _, mx := range hosts {
		host := strings.TrimSuffix(mx.Host, ".")
		ips, err := r.LookupHost(ctx, host)
		if err != nil {
			lastErr = fmt.Errorf("deliver: look up MX host %s of %s: %w", host, name, err)
			continue
		}
		for _, ip := range ips {
			ts = append(ts, target{addr: net.JoinHostPort(ip, port), name: host})
		}
	}
	if len(ts) == 0 {
		if lastErr == nil {
			lastErr = fmt.Errorf("deliver: no MX host of %s has an address", name)
		}
		return nil, lastErr
	}
	return ts, nil
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// dialTarget connects to one address and makes it ready for MAIL: greeting,
// EHLO, and STARTTLS as mode says.
func (d *Deliverer) dialTarget(ctx context.Context, t target, mode config.TLSMode) (*clientSession, error) {
	dialer := net.Dialer{Timeout: orDuration(d.DialTimeout, defaultDialTimeout)}
	raw, err := dialer.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, fmt.Errorf("deliver: dial %s: %w", t.addr, err)
	}
	// Closing the socket is what interrupts a blocked read whatever
	// deadline go-smtp has set meanwhile, so cancellation closes it.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	s, err := d.open(ctx, raw, t, mode)
	if !stop() {
		if err == nil {
			s.conn.Close()
		}
		return nil, fmt.Errorf("deliver: %s: %w", t.addr, context.Cause(ctx))
	}
	if err != nil {
		raw.Close()
		return nil, err
	}
	return s, nil
}

// greetingReplay is what the client after STARTTLS reads as its greeting.
// RFC 3207 §4.2 has no new greeting after the handshake, but go-smtp's
// client always reads one first; the server's real greeting was consumed
// by the client that ran before TLS.
const greetingReplay = "220 greeting received before STARTTLS\r\n"

// open runs the opening exchange on raw.
//
// The TLS approach. go-smtp v0.25.1 can only start TLS inside
// NewClientStartTLS/DialStartTLS, which introduce themselves as
// "EHLO localhost" and fail (closing the socket) when the server does not
// offer STARTTLS, so opportunistic TLS with them costs a second TCP
// connection to every peer without STARTTLS. Instead:
//
//  1. a go-smtp client on the plain socket reads the greeting and sends
//     EHLO with our Hostname (falling back to HELO by itself);
//  2. without STARTTLS in the reply (or with tls = "none") that client is
//     the session: one connection, one EHLO, nothing of ours on the wire;
//  3. with STARTTLS, we send the STARTTLS command on the socket ourselves.
//     go-smtp has read exactly the EHLO reply and the server says nothing
//     more until spoken to, so the socket is in a known state; the first
//     client is dropped (not closed, which would close the socket). Any
//     byte after the 220 is refused: it was sent in plaintext and must not
//     be read as if it came through TLS (CVE-2011-0411 class). After the
//     handshake a new go-smtp client runs over the TLS connection; it reads
//     greetingReplay as its greeting and sends EHLO with our Hostname, the
//     EHLO that matters (RFC 3207 §4.2).
//
// A server that offered STARTTLS and then fails it is an error (deferred),
// never a reason to go on in plaintext: that would let anyone on the path
// strip TLS by breaking the handshake.
func (d *Deliverer) open(ctx context.Context, raw net.Conn, t target, mode config.TLSMode) (*clientSession, error) {
	cmdTimeout := orDuration(d.CommandTimeout, defaultCommandTimeout)
	c := d.newClient(raw)
	if err := c.Hello(d.hostname()); err != nil {
		return nil, fmt.Errorf("deliver: %s: greeting or EHLO: %w", t.addr, err)
	}
	s := &clientSession{
		raw:         raw,
		remote:      t.addr,
		hostname:    d.hostname(),
		cmdTimeout:  cmdTimeout,
		dataTimeout: orDuration(d.DataTimeout, defaultDataTimeout),
		now:         d.now,
	}
	if mode == config.TLSNone {
		return s.ready(c, raw), nil
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		if mode == config.TLSRequire {
			c.CommandTimeout = quitTimeout
			c.Quit() // courtesy only; the caller closes the socket anyway
			return nil, fmt.Errorf("deliver: %s does not offer STARTTLS and the route says tls = require", t.addr)
		}
		return s.ready(c, raw), nil
	}

	raw.SetDeadline(time.Now().Add(cmdTimeout))
	if _, err := io.WriteString(raw, "STARTTLS\r\n"); err != nil {
		return nil, fmt.Errorf("deliver: %s: STARTTLS: %w", t.addr, err)
	}
	br := bufio.NewReader(raw)
	if _, _, err := textproto.NewReader(br).ReadResponse(220); err != nil {
		return nil, fmt.Errorf("deliver: %s: STARTTLS: %w", t.addr, err)
	}
	if n := br.Buffered(); n > 0 {
		return nil, fmt.Errorf("deliver: %s sent %d bytes of plaintext after its STARTTLS reply", t.addr, n)
	}
	tc := tls.Client(raw, d.tlsConfig(mode, t.name))
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("deliver: %s: TLS handshake: %w", t.addr, err)
	}
	raw.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	// Under tls = "require" the handshake verified the certificate; an
	// opportunistic session is checked here too, without failing it, so
	// that REQUIRETLS mail (RFC 8689 §4.2.1) may use it when it verifies.
	s.verified = mode == config.TLSRequire || d.verifyPeer(st, t.name) == nil

	conn := &replayConn{Conn: tc, pending: []byte(greetingReplay)}
	c = d.newClient(conn)
	if err := c.Hello(d.hostname()); err != nil {
		return nil, fmt.Errorf("deliver: %s: EHLO after STARTTLS: %w", t.addr, err)
	}
	s.tls = &st
	return s.ready(c, conn), nil
}

// ready makes s the session on conn, whose opening c has done: from here
// on the transactions are ours (transaction.go), and c only answers what
// the server's EHLO reply offered. c has read exactly the EHLO reply, and
// the server says nothing until spoken to, so no byte is left in c's
// buffer.
func (s *clientSession) ready(c *smtp.Client, conn net.Conn) *clientSession {
	s.conn = conn
	s.ext = func(name string) bool { ok, _ := c.Extension(name); return ok }
	s.pipelining = s.ext("PIPELINING")
	s.br = bufio.NewReaderSize(conn, maxReplyLine)
	s.bw = bufio.NewWriterSize(conn, 16<<10)
	return s
}

func (d *Deliverer) newClient(conn net.Conn) *smtp.Client {
	c := smtp.NewClient(conn)
	c.CommandTimeout = orDuration(d.CommandTimeout, defaultCommandTimeout)
	c.SubmissionTimeout = orDuration(d.DataTimeout, defaultDataTimeout)
	return c
}

// tlsConfig is the client TLS configuration for a hop whose certificate
// should name name.
func (d *Deliverer) tlsConfig(mode config.TLSMode, name string) *tls.Config {
	if mode == config.TLSRequire {
		// ServerName may be an IP address (a route to "[192.0.2.1]:25");
		// crypto/tls then checks the certificate's IP SANs.
		return &tls.Config{RootCAs: d.RootCAs, ServerName: name, MinVersion: tls.VersionTLS12}
	}
	cfg := &tls.Config{
		// Opportunistic TLS (RFC 7435): without authentication it still
		// defeats passive eavesdropping, and a verification failure would
		// only push the mail to plaintext, which is worse.
		InsecureSkipVerify: true,
	}
	if _, err := netip.ParseAddr(name); err != nil {
		cfg.ServerName = name // SNI, for servers hosting several names
	}
	return cfg
}

// verifyPeer checks the certificate chain of an opportunistic TLS session
// against RootCAs and the hop's name, as tls = "require" would have.
func (d *Deliverer) verifyPeer(st tls.ConnectionState, name string) error {
	if len(st.PeerCertificates) == 0 {
		return errors.New("no peer certificate")
	}
	opts := x509.VerifyOptions{Roots: d.RootCAs, DNSName: name, Intermediates: x509.NewCertPool()}
	for _, c := range st.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := st.PeerCertificates[0].Verify(opts)
	return err
}

// replayConn is a net.Conn whose first reads return pending before reading
// from the connection.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// clientSession is one open SMTP connection to a next hop. It is used by
// one goroutine at a time.
type clientSession struct {
	conn        net.Conn // what the session talks over (TCP or TLS)
	raw         net.Conn // the TCP connection, closed to abort at once
	br          *bufio.Reader
	bw          *bufio.Writer
	ext         func(keyword string) bool // offered in the reply to our EHLO
	pipelining  bool                      // RFC 2920, offered
	now         func() time.Time
	remote      string
	hostname    string               // ours, as in EHLO
	tls         *tls.ConnectionState // nil in plaintext
	verified    bool                 // TLS with a certificate that verified for the hop's name
	cmdTimeout  time.Duration
	dataTimeout time.Duration

	// dirty: a transaction was started and not ended by the reply to the
	// end of DATA, so the next message starts with RSET.
	dirty  bool
	broken bool // a Send failed mid-way: the protocol state is unknown
	closed bool
	// bodyBuf reads message bodies from the spool (writeMessage).
	bodyBuf *bufio.Reader
}

// bodyReadBuf is the buffer a session reads bodies through.
const bodyReadBuf = 32 << 10

var _ queue.Session = (*clientSession)(nil)

// Remote implements queue.Session: the address connected to.
func (s *clientSession) Remote() string { return s.remote }

// Send implements queue.Session. Each recipient gets the reply to its RCPT
// if refused, else the reply to the end of DATA. A refused MAIL or DATA
// command is every (accepted) recipient's reply. An I/O error, a timeout,
// a 421 or a reply that makes no sense is an error: the session is then
// unusable.
func (s *clientSession) Send(ctx context.Context, msg *spool.Message, rcpts []string, body *spool.Body) ([]queue.Reply, error) {
	if s.broken || s.closed {
		return nil, fmt.Errorf("deliver: %s: session is no longer usable", s.remote)
	}
	// The hand-off field makes a re-send after a lost 250 harmless at a
	// next hop that is one of ours (see handoff.go). It goes on the wire
	// in front of the body, never into a copy of it.
	head := handoffHeader(s.hostname, msg.ID)
	// Everything that could be refused locally is checked before the first
	// byte is sent, so a local problem never leaves a half transaction.
	p, err := storedParams(msg)
	if err != nil {
		return nil, fmt.Errorf("deliver: message %s: %w", msg.ID, err)
	}
	levels := levelsOf(msg, p)
	rcptLines := make([]string, len(rcpts))
	for i, r := range rcpts {
		if rcptLines[i], err = s.rcptLine(r); err != nil {
			return nil, fmt.Errorf("deliver: message %s: %w", msg.ID, err)
		}
	}
	if len(rcptLines) == 0 {
		return nil, nil
	}
	if refuse := s.cannotCarry(p); refuse != nil {
		return all(make([]queue.Reply, len(rcpts)), *refuse), nil
	}
	params, refuse, relayed := s.mailParams(p, levels, int64(len(head))+body.Size())
	if refuse != nil {
		return all(make([]queue.Reply, len(rcpts)), *refuse), nil
	}
	mail := "MAIL FROM:" + msg.From + params.String()
	if !oneCommandLine(mail) {
		return nil, fmt.Errorf("deliver: message %s: reverse path %q is not one command line", msg.ID, msg.From)
	}

	stop := context.AfterFunc(ctx, func() { s.raw.Close() })
	replies, err := s.transact(mail, rcptLines, head, body)
	if !stop() {
		// The socket was closed under us. Replies already complete stay
		// true (the message may have been delivered); the session is gone.
		s.broken = true
		if err != nil {
			return nil, fmt.Errorf("%w (interrupted: %w)", err, context.Cause(ctx))
		}
	}
	if err != nil {
		s.broken = true
		return nil, err
	}
	for i := range replies {
		if replies[i].Code/100 == 2 {
			// A hop without DSN got no NOTIFY (mailParams, rcptLine), so
			// the queue sends the "relayed" notice itself (RFC 3461 §6.2.1).
			replies[i].Relayed = !s.ext("DSN") || relayed
		}
	}
	return replies, nil
}

func all(replies []queue.Reply, r queue.Reply) []queue.Reply {
	for i := range replies {
		replies[i] = r
	}
	return replies
}

// transact runs one mail transaction: [RSET], MAIL, RCPT for each line of
// rcpts, DATA and the message. See Send for what the replies mean.
func (s *clientSession) transact(mail string, rcpts []string, head []byte, body *spool.Body) ([]queue.Reply, error) {
	lines := make([]string, 0, len(rcpts)+3)
	if s.dirty {
		lines = append(lines, "RSET")
	}
	mailAt := len(lines)
	lines = append(lines, mail)
	lines = append(lines, rcpts...)
	dataAt := len(lines)
	lines = append(lines, "DATA")

	s.dirty = true
	accepted := 0
	wire, err := s.roundTrip(lines, s.cmdTimeout, func(i int, r wireReply) bool {
		switch {
		case i < mailAt:
			return !r.ok() // RSET
		case i == mailAt:
			return !r.ok()
		case i < dataAt:
			if r.ok() {
				accepted++
			}
			return i == dataAt-1 && accepted == 0
		}
		return false
	})
	if err != nil {
		return nil, s.fail(lines[len(wire)], err)
	}
	for i, r := range wire {
		if r.fatal() || (i < mailAt && !r.ok()) {
			return nil, s.fail(lines[i], errors.New(r.text))
		}
	}

	replies := make([]queue.Reply, len(rcpts))
	switch r := wire[mailAt]; {
	case r.refusal():
		return s.endEarly(wire, dataAt, all(replies, queue.Reply{Code: r.code, Text: r.text}))
	case !r.ok():
		return nil, s.fail(lines[mailAt], errors.New(r.text))
	}
	accepted = 0
	for i, r := range wire[mailAt+1 : min(len(wire), dataAt)] {
		switch {
		case r.ok():
			accepted++
			// Provisional: the reply to DATA decides.
			replies[i] = queue.Reply{Code: 250, Text: "250 recipient accepted"}
		case r.refusal():
			replies[i] = queue.Reply{Code: r.code, Text: r.text}
		default:
			return nil, s.fail(lines[mailAt+1+i], errors.New(r.text))
		}
	}
	// The accepted recipients share the answer to DATA and to the message.
	answer := func(r wireReply) []queue.Reply {
		for i := range replies {
			if replies[i].Code == 250 {
				replies[i] = queue.Reply{Code: r.code, Text: r.text}
			}
		}
		return replies
	}
	if accepted == 0 {
		// The refusals are real answers.
		return s.endEarly(wire, dataAt, replies)
	}
	switch r := wire[dataAt]; {
	case r.code == 354:
	case r.refusal():
		return answer(r), nil
	default:
		return nil, s.fail("DATA", errors.New(r.text))
	}

	s.conn.SetWriteDeadline(time.Now().Add(s.dataTimeout))
	if s.bodyBuf == nil {
		s.bodyBuf = bufio.NewReaderSize(nil, bodyReadBuf)
	}
	if err := writeMessage(s.bw, head, s.bodyBuf, body.NewReader()); err != nil {
		return nil, s.fail("DATA", err)
	}
	r, err := s.readReply(s.dataTimeout)
	if err != nil {
		return nil, s.fail("end of DATA", err)
	}
	if !r.ok() && !r.refusal() {
		return nil, s.fail("end of DATA", errors.New(r.text))
	}
	// RFC 5321 §4.1.1.4: any reply to the end of DATA ends the
	// transaction; the next MAIL needs no RSET.
	s.dirty = false
	return answer(r), nil
}

// endEarly finishes a transaction that carries no message: MAIL refused,
// or no recipient accepted. A pipelining server that answers the DATA sent
// along with 354 anyway now waits for a message; rather than send an
// empty one, the session is given up (the replies stay true).
func (s *clientSession) endEarly(wire []wireReply, dataAt int, replies []queue.Reply) ([]queue.Reply, error) {
	if len(wire) > dataAt && wire[dataAt].code == 354 {
		s.broken = true
	}
	return replies, nil
}

func (s *clientSession) fail(cmd string, err error) error {
	s.broken = true
	if i := strings.IndexByte(cmd, ':'); i > 0 {
		cmd = cmd[:i] // "MAIL FROM", "RCPT TO": not the whole line
	}
	return fmt.Errorf("deliver: %s: %s: %w", s.remote, cmd, err)
}

// Close implements queue.Session: QUIT, bounded by a short timeout, then
// close. A peer that does not answer QUIT is not an error worth reporting.
func (s *clientSession) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if !s.broken {
		s.conn.SetDeadline(time.Now().Add(quitTimeout))
		s.bw.WriteString("QUIT\r\n")
		if s.bw.Flush() == nil {
			s.readReply(quitTimeout)
		}
	}
	if err := s.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("deliver: close %s: %w", s.remote, err)
	}
	return nil
}

// storedParams parses the MAIL parameters stored with msg.
func storedParams(msg *spool.Message) (envelope.MailParams, error) {
	from := msg.From
	if len(from) < 2 || from[0] != '<' || from[len(from)-1] != '>' {
		return envelope.MailParams{}, fmt.Errorf("stored reverse path %q is not in wire form", from)
	}
	p, err := envelope.ParseMailParams(strings.TrimSpace(msg.MailParams))
	if err != nil {
		return envelope.MailParams{}, fmt.Errorf("stored MAIL parameters: %w", err)
	}
	return p, nil
}

// cannotCarry is the reply for every recipient when this hop cannot carry
// a message with parameters p at all, nil when it can.
func (s *clientSession) cannotCarry(p envelope.MailParams) *queue.Reply {
	if p.RequireTLS {
		// RFC 8689 §4.2.1: only over verified TLS to a hop that promises
		// to keep the requirement; otherwise the message must not go on
		// and is returned (§4.2.2, 5.7.30), never sent in the clear.
		var why string
		switch {
		case s.tls == nil:
			why = "no TLS session"
		case !s.verified:
			why = "its TLS certificate did not verify"
		case !s.ext("REQUIRETLS"):
			why = "it does not offer REQUIRETLS"
		}
		if why != "" {
			return &queue.Reply{Code: 550, Text: fmt.Sprintf("550 5.7.30 REQUIRETLS support required: %s cannot carry the message (%s)", s.remote, why)}
		}
	}
	if p.SMTPUTF8 && !s.ext("SMTPUTF8") {
		// RFC 6531 §3.2: such a message cannot be relayed to this hop.
		return &queue.Reply{Code: 553, Text: fmt.Sprintf("553 5.6.7 SMTPUTF8 is required, but was not offered by %s", s.remote)}
	}
	return nil
}

// mailParams are the MAIL parameters this hop gets for a message stored
// with p, whose body (with our hand-off field) is size bytes: each only
// where the hop offers its extension. AUTH= is not passed on: it asserted
// the sender's identity to this relay (RFC 4954 §5), and the next hop has
// no reason to trust it. MT-PRIORITY and BY follow levelParams.
func (s *clientSession) mailParams(p envelope.MailParams, l levels, size int64) (out envelope.MailParams, refuse *queue.Reply, relayed bool) {
	if s.ext("SIZE") {
		out.Size = size
	}
	if p.Body == envelope.Body8BitMIME && s.ext("8BITMIME") {
		out.Body = p.Body
	}
	out.SMTPUTF8 = p.SMTPUTF8
	out.RequireTLS = p.RequireTLS
	if s.ext("DSN") {
		out.Ret, out.EnvID = p.Ret, p.EnvID
	}
	out, refuse, relayed = s.levelParams(out, l)
	return out, refuse, relayed
}

// rcptLine is the RCPT command for a stored forward path in wire form,
// optionally followed by its parameters ("<u@d> NOTIFY=FAILURE
// ORCPT=rfc822;u@d"). The path keeps its source route; the DSN
// parameters go only to a hop that offers DSN.
func (s *clientSession) rcptLine(rcpt string) (string, error) {
	path, params, err := envelope.SplitArg(rcpt)
	if err != nil {
		return "", fmt.Errorf("recipient %q: %w", rcpt, err)
	}
	if len(path) <= 2 || path[0] != '<' || path[len(path)-1] != '>' {
		return "", fmt.Errorf("recipient %q: not a forward path", rcpt)
	}
	p, err := envelope.ParseRcptParams(params)
	if err != nil {
		return "", fmt.Errorf("recipient %q: %w", rcpt, err)
	}
	line := "RCPT TO:" + path
	if s.ext("DSN") {
		line += p.String()
	}
	if !oneCommandLine(line) {
		return "", fmt.Errorf("recipient %q: not one command line", rcpt)
	}
	return line, nil
}

// oneCommandLine reports whether line can be sent as one command: no
// control characters, which would end it early or smuggle another.
func oneCommandLine(line string) bool {
	for i := 0; i < len(line); i++ {
		if line[i] < ' ' || line[i] == 0x7f {
			return false
		}
	}
	return true
}

// oneLine joins the lines of a multi-line reply with spaces and replaces
// control characters: reply text goes into DSNs and the event log, where a
// line break from a remote server must not start a new field.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n':
			return ' '
		case r < ' ' || r == 0x7f:
			return '?'
		}
		return r
	}, strings.TrimSpace(s))
}
