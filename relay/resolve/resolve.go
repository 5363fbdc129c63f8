// Package resolve is the relay's DNS client: every lookup the relay makes
// (MX, A/AAAA, TXT for DKIM and MTA-STS, TLSA for DANE) goes through a
// Resolver, which asks the servers of [dns] (or those of resolv.conf) with
// github.com/miekg/dns.
//
// Errors are *net.DNSError, as the standard library's resolver gives, so
// that callers tell "does not exist" (IsNotFound: NXDOMAIN, or no record
// of the type) from "try again later" (IsTemporary: SERVFAIL, REFUSED, a
// timeout, a malformed answer) the same way whichever resolver they use.
// NXDOMAIN is told apart from "no record of this type" (NODATA) by
// IsNXDomain, which the MX logic of RFC 5321 §5.1 needs.
//
// DNSSEC is not validated here. Like Postfix with smtp_dns_support_level =
// dnssec, the relay trusts the AD bit of the answers of its resolver, which
// must then be a validating resolver reached over a path nobody can tamper
// with: loopback. Secure reports that bit for the lookups DANE needs.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Resolver sends queries to recursive DNS servers. The zero value is not
// usable; make one with New.
type Resolver struct {
	servers  []string // "ip:port"
	timeout  time.Duration
	attempts int
}

// Options configure New.
type Options struct {
	// Servers are "ip:port" (or bare IP, port 53) addresses of recursive
	// resolvers, tried in order; empty: the nameservers of ResolvConf.
	Servers []string
	// ResolvConf is read when Servers is empty; "": /etc/resolv.conf. A
	// missing file, or one without nameservers, means 127.0.0.1:53.
	ResolvConf string
	// Timeout bounds one query to one server (0: 5s); Attempts is how many
	// times the whole list is tried (0: 2).
	Timeout  time.Duration
	Attempts int
}

// New makes a Resolver.
func New(o Options) (*Resolver, error) {
	r := &Resolver{timeout: o.Timeout, attempts: o.Attempts}
	if r.timeout <= 0 {
		r.timeout = 5 * time.Second
	}
	if r.attempts <= 0 {
		r.attempts = 2
	}
	servers := o.Servers
	if len(servers) == 0 {
		path := o.ResolvConf
		if path == "" {
			path = "/etc/resolv.conf"
		}
		// Like the C library and Go's resolver: without a readable file
		// or a nameserver line, ask the local host.
		if cc, err := dns.ClientConfigFromFile(path); err == nil {
			for _, s := range cc.Servers {
				servers = append(servers, net.JoinHostPort(s, cc.Port))
			}
		}
		if len(servers) == 0 {
			servers = []string{"127.0.0.1:53"}
		}
	}
	for _, s := range servers {
		a, err := ServerAddr(s)
		if err != nil {
			return nil, fmt.Errorf("resolve: %w", err)
		}
		r.servers = append(r.servers, a)
	}
	return r, nil
}

// ServerAddr checks a server address and adds port 53 when it has none.
func ServerAddr(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.String(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	return "", fmt.Errorf("DNS server %q is not an IP address with an optional port", s)
}

// Servers returns the servers queried, in order.
func (r *Resolver) Servers() []string { return slices.Clone(r.servers) }

// Answer is the useful part of a DNS response.
type Answer struct {
	RRs []dns.RR // the answer section, of the type asked for (CNAMEs followed)
	// Secure is the AD bit: the resolver validated the answer with DNSSEC.
	Secure bool
}

// errNXDomain marks a *net.DNSError made from an NXDOMAIN answer.
const nxText = "no such domain (NXDOMAIN)"

// IsNXDomain reports whether err says the name does not exist at all, as
// opposed to having no record of the type asked for.
func IsNXDomain(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound && de.Err == nxText
}

// Query asks for the records of type qtype at name. A name with no such
// records (NODATA) or no name at all (NXDOMAIN) is a *net.DNSError with
// IsNotFound; SERVFAIL, REFUSED and timeouts from every server, on every
// attempt, are a *net.DNSError with IsTemporary.
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) (Answer, error) {
	fqdn := dns.Fqdn(strings.ToLower(name))
	if _, ok := dns.IsDomainName(fqdn); !ok || strings.ContainsAny(name, " \t\r\n") {
		return Answer{}, &net.DNSError{Err: "invalid domain name", Name: name, IsNotFound: true}
	}
	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype)
	m.Id = uint16(rand.Uint32())
	// AD in a query asks for AD in the answer (RFC 6840 §5.7); DO would
	// also bring signatures we do not need.
	m.AuthenticatedData = true
	m.SetEdns0(1232, false)

	tname := dns.TypeToString[qtype]
	var last *net.DNSError
	for range r.attempts {
		for _, srv := range r.servers {
			if err := ctx.Err(); err != nil {
				return Answer{}, &net.DNSError{Err: context.Cause(ctx).Error(), Name: name, Server: srv, IsTemporary: true, IsTimeout: true}
			}
			resp, err := r.exchange(ctx, m, srv)
			if err != nil {
				var ne net.Error
				last = &net.DNSError{Err: err.Error(), Name: name, Server: srv, IsTemporary: true,
					IsTimeout: errors.As(err, &ne) && ne.Timeout()}
				continue
			}
			switch resp.Rcode {
			case dns.RcodeSuccess:
				rrs := answers(resp, fqdn, qtype)
				if len(rrs) == 0 {
					return Answer{Secure: resp.AuthenticatedData}, &net.DNSError{Err: "no " + tname + " record", Name: name, Server: srv, IsNotFound: true}
				}
				return Answer{RRs: rrs, Secure: resp.AuthenticatedData}, nil
			case dns.RcodeNameError:
				return Answer{Secure: resp.AuthenticatedData}, &net.DNSError{Err: nxText, Name: name, Server: srv, IsNotFound: true}
			default:
				// SERVFAIL (a broken or bogus zone), REFUSED, ...: another
				// server may know better; in the end it is temporary.
				last = &net.DNSError{Err: "server answered " + dns.RcodeToString[resp.Rcode] + " for " + tname, Name: name, Server: srv, IsTemporary: true}
			}
		}
	}
	return Answer{}, last
}

// exchange sends m to srv over UDP, and again over TCP when the answer
// was truncated.
func (r *Resolver) exchange(ctx context.Context, m *dns.Msg, srv string) (*dns.Msg, error) {
	c := &dns.Client{Net: "udp", Timeout: r.timeout}
	resp, _, err := c.ExchangeContext(ctx, m, srv)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, m, srv)
	}
	if err == nil && resp.Id != m.Id {
		err = errors.New("answer with a wrong ID")
	}
	return resp, err
}

// answers picks the records of type qtype for name out of resp, following
// the CNAME chain the resolver put in front of them.
func answers(resp *dns.Msg, name string, qtype uint16) []dns.RR {
	owner := name
	for range 8 { // a longer chain is not worth following
		var out []dns.RR
		next := ""
		for _, rr := range resp.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, owner) {
				continue
			}
			switch {
			case h.Rrtype == qtype:
				out = append(out, rr)
			case h.Rrtype == dns.TypeCNAME && qtype != dns.TypeCNAME:
				next = rr.(*dns.CNAME).Target
			}
		}
		if len(out) > 0 || next == "" {
			return out
		}
		owner = next
	}
	return nil
}
