package deliver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/tlsrpt"
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
	// STS gives recipient domains' MTA-STS policies (RFC 8461) for MX
	// deliveries; nil: none.
	STS STSSource
	// DANE looks up the TLSA records of MX hosts (RFC 7672) when Resolver
	// is a SecureResolver (a validating resolver's AD bit).
	DANE bool
	// Report receives the outcome of every TLS session attempt with an MX
	// host (TLS-RPT, RFC 8460, and metrics); nil: none.
	Report func(tlsrpt.Result)
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
	// policy is the TLS policy of an MX host (policy.go); nil for hops
	// that policies do not apply to.
	policy *hostPolicy

	// What the hop's route says of every one of its addresses (set by
	// Dial): the EHLO name, the roots that verify its certificate, and
	// the local address to connect from.
	ehlo   string
	roots  *x509.CertPool
	source netip.Addr
}

// Dial implements queue.Deliverer. The addresses of hop are tried in order
// until one gives a session; the error of the last one is returned. A
// *queue.PermanentError means the domain cannot receive mail at all
// (NXDOMAIN: 550, null MX: 556); every other error defers.
func (d *Deliverer) Dial(ctx context.Context, hop queue.Hop) (queue.Session, error) {
	if hop.Local {
		return nil, fmt.Errorf("deliver: hop %q is local, not an SMTP destination", hop.Key)
	}
	ehlo := d.hostname()
	if hop.EHLO != "" {
		ehlo = hop.EHLO
	}
	if strings.ContainsAny(ehlo, " \t\r\n") {
		return nil, fmt.Errorf("deliver: invalid EHLO name %q", ehlo)
	}
	mode := config.TLSMode(hop.TLS)
	switch mode {
	case "":
		mode = config.TLSOpportunistic
	case config.TLSOpportunistic, config.TLSRequire, config.TLSImplicit, config.TLSNone:
	default:
		// Fail closed: an unknown policy might have meant "require".
		return nil, fmt.Errorf("deliver: hop %q: unknown TLS mode %q", hop.Key, hop.TLS)
	}
	if hop.Auth != nil && mode != config.TLSRequire && mode != config.TLSImplicit {
		// Fail closed: a password never goes out without verified TLS.
		return nil, fmt.Errorf("deliver: hop %q: AUTH needs tls = require or implicit, not %q", hop.Key, mode)
	}
	targets, err := d.targets(ctx, hop, mode == config.TLSOpportunistic)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, t := range targets {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("deliver: %s: %w", hop.Key, context.Cause(ctx))
		}
		t.ehlo, t.roots, t.source = ehlo, d.RootCAs, hop.SourceIP
		if hop.RootCAs != nil {
			t.roots = hop.RootCAs
		}
		if hop.ServerName != "" {
			t.name = hop.ServerName
		}
		s, err := d.dialTarget(ctx, t, mode)
		if err == nil && hop.Auth != nil {
			if err = s.auth(hop.Auth); err != nil {
				s.Close()
				if refusedLogin(err) {
					// The same login would be refused by every address
					// of the hop: the attempt ends with the reply.
					return nil, err
				}
			}
		}
		if err == nil {
			log := d.logger().With("hop", hop.Key, "addr", t.addr, "name", t.name)
			if s.tls != nil {
				log.Debug("deliver: session opened", "tls", tls.VersionName(s.tls.Version), "verified", s.verified, "policy", s.policy, "auth", hop.Auth != nil)
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
