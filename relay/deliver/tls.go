package deliver

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/dane"
	"github.com/relay-mta/relay/relay/tlsrpt"
)

// dialTarget connects to one address and makes it ready for MAIL: greeting,
// EHLO, and STARTTLS as mode says.
func (d *Deliverer) dialTarget(ctx context.Context, t target, mode config.TLSMode) (*clientSession, error) {
	dialer := net.Dialer{Timeout: orDuration(d.DialTimeout, defaultDialTimeout)}
	if t.source.IsValid() {
		dialer.LocalAddr = &net.TCPAddr{IP: t.source.AsSlice()} // source_ip
	}
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
	conn := raw
	var implicit *tls.ConnectionState
	if mode == config.TLSImplicit {
		// RFC 8314: TLS from the first byte, verified as under require.
		raw.SetDeadline(time.Now().Add(cmdTimeout))
		tc := tls.Client(raw, d.tlsConfig(config.TLSRequire, t))
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("deliver: %s: TLS handshake: %w", t.addr, err)
		}
		raw.SetDeadline(time.Time{})
		st := tc.ConnectionState()
		conn, implicit = tc, &st
	}
	c := d.newClient(conn)
	if err := c.Hello(t.ehlo); err != nil {
		return nil, fmt.Errorf("deliver: %s: greeting or EHLO: %w", t.addr, replyErr(err))
	}
	s := &clientSession{
		raw:         raw,
		remote:      t.addr,
		hostname:    d.hostname(),
		cmdTimeout:  cmdTimeout,
		dataTimeout: orDuration(d.DataTimeout, defaultDataTimeout),
		now:         d.now,
	}
	pol := t.policy
	if pol != nil {
		s.policy = pol.label()
	}
	if implicit != nil {
		s.tls, s.verified = implicit, true
		return s.ready(c, conn), nil
	}
	if mode == config.TLSNone {
		return s.ready(c, raw), nil
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		if pol != nil && pol.kind != policyNone {
			d.report(pol, t.name, t.addr, tlsrpt.StartTLSNotSupported, t.addr+" does not offer STARTTLS")
		}
		if mode == config.TLSRequire || pol.enforced() {
			c.CommandTimeout = quitTimeout
			c.Quit() // courtesy only; the caller closes the socket anyway
			if pol.enforced() {
				return nil, pol.deferErr("4.7.4", "%s (%s) does not offer STARTTLS", t.addr, t.name)
			}
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
	tc := tls.Client(raw, d.tlsConfig(mode, t))
	if err := tc.HandshakeContext(ctx); err != nil {
		if pol.enforced() {
			d.report(pol, t.name, t.addr, handshakeFailure(pol, err), err.Error())
			return nil, pol.deferErr("4.7.5", "%s (%s): %v", t.addr, t.name, err)
		}
		return nil, fmt.Errorf("deliver: %s: TLS handshake: %w", t.addr, err)
	}
	raw.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	// Under tls = "require" and an enforced policy the handshake verified
	// the certificate; an opportunistic session is checked here too,
	// without failing it, so that REQUIRETLS mail (RFC 8689 §4.2.1) may
	// use it when it verifies, and MTA-STS testing can report.
	verr := error(nil)
	if mode != config.TLSRequire && !pol.enforced() {
		verr = d.verifyPeer(st, t)
	}
	s.verified = verr == nil
	if pol != nil {
		if pol.kind == policySTSTesting && verr != nil {
			d.report(pol, t.name, t.addr, certFailure(verr), verr.Error())
		} else {
			d.report(pol, t.name, t.addr, "", "")
		}
	}

	conn = &replayConn{Conn: tc, pending: []byte(greetingReplay)}
	c = d.newClient(conn)
	if err := c.Hello(t.ehlo); err != nil {
		return nil, fmt.Errorf("deliver: %s: EHLO after STARTTLS: %w", t.addr, replyErr(err))
	}
	s.tls = &st
	return s.ready(c, conn), nil
}

// handshakeFailure is the TLS-RPT result type of a failed handshake under
// an enforced policy: the certificate's fault under MTA-STS, a TLSA
// mismatch (validation-failure) under DANE or any other failure.
func handshakeFailure(p *hostPolicy, err error) string {
	var cv *tls.CertificateVerificationError
	if p.kind == policySTSEnforce && errors.As(err, &cv) {
		return certFailure(cv.Err)
	}
	return tlsrpt.ValidationFailure
}

// ready makes s the session on conn, whose opening c has done: from here
// on the transactions are ours (transaction.go), and c only answers what
// the server's EHLO reply offered. c has read exactly the EHLO reply, and
// the server says nothing until spoken to, so no byte is left in c's
// buffer.
func (s *clientSession) ready(c *smtp.Client, conn net.Conn) *clientSession {
	s.conn = conn
	s.ext = func(name string) bool { ok, _ := c.Extension(name); return ok }
	s.authParam = func() string { _, p := c.Extension("AUTH"); return p }
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

// tlsConfig is the client TLS configuration for target t.
func (d *Deliverer) tlsConfig(mode config.TLSMode, t target) *tls.Config {
	name := t.name
	switch {
	case t.policy != nil && t.policy.kind == policyDANE:
		// RFC 7672 §3: the TLSA records authenticate the server, not the
		// Web PKI; names are checked only under DANE-TA (dane.Verify).
		recs := t.policy.tlsa
		return &tls.Config{
			ServerName: name, MinVersion: tls.VersionTLS12,
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				return dane.Verify(cs.PeerCertificates, recs, []string{name})
			},
		}
	case mode == config.TLSRequire || t.policy.enforced():
		// MTA-STS enforce (RFC 8461 §4.2) is tls = "require": a
		// certificate valid for the MX host's name, from a trusted CA.
		// ServerName may be an IP address (a route to "[192.0.2.1]:25");
		// crypto/tls then checks the certificate's IP SANs.
		return &tls.Config{RootCAs: t.roots, ServerName: name, MinVersion: tls.VersionTLS12}
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
func (d *Deliverer) verifyPeer(st tls.ConnectionState, t target) error {
	if len(st.PeerCertificates) == 0 {
		return errors.New("no peer certificate")
	}
	opts := x509.VerifyOptions{Roots: t.roots, DNSName: t.name, Intermediates: x509.NewCertPool()}
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
