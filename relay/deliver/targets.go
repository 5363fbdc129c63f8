package deliver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/relay/mtasts"
	"github.com/relay-mta/relay/relay/resolve"
)

// targets lists the addresses of hop, best first, without duplicates and
// at most maxDialAddrs of them.
// policies turns on the TLS policies of MX hosts (policy.go).
func (d *Deliverer) targets(ctx context.Context, hop queue.Hop, policies bool) ([]target, error) {
	var ts []target
	var err error
	switch {
	case len(hop.Addrs) > 0:
		ts, err = d.addrTargets(ctx, hop.Addrs)
	case hop.MX != "":
		ts, err = d.mxTargets(ctx, hop.MX, hop.Port, policies)
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
		if err != nil && !strings.ContainsAny(a, ":[]") {
			// A bare name in a route's list of next hops: its MX hosts,
			// in preference order, on port 25 (route failover).
			mts, err := d.mxTargets(ctx, a, 25, false) // routes keep their own tls setting
			if err != nil {
				lastErr = fmt.Errorf("deliver: next hop %s: %w", a, errors.Unwrap(err))
				if !queue.IsPermanent(err) {
					lastErr = err
				}
				continue
			}
			ts = append(ts, mts...)
			continue
		}
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

// mxTargets finds the addresses of domain's mail exchangers (RFC 5321
// §5.1), and with policies the TLS policy of each (policy.go). Hosts are
// tried in order of preference, equal ones in random order: the caller
// goes on to the next address, and so the next MX, when one fails.
//
// NXDOMAIN fails the mail with 550 5.1.2, a null MX (RFC 7505) with 556
// 5.1.10; any other DNS failure (SERVFAIL, a timeout) defers it. The
// domain's own addresses are used ("implicit MX") only when it has no MX
// record at all.
func (d *Deliverer) mxTargets(ctx context.Context, domain string, portNum int, policies bool) ([]target, error) {
	name := strings.TrimSuffix(strings.ToLower(domain), ".")
	if portNum <= 0 {
		portNum = 25
	}
	port := strconv.Itoa(portNum)
	r := d.resolver()

	var mxs []*net.MX
	var mxSecure bool
	var err error
	if sr, ok := r.(SecureResolver); ok {
		mxs, mxSecure, err = sr.LookupMXSecure(ctx, name)
	} else {
		mxs, err = r.LookupMX(ctx, name)
	}
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("deliver: MX lookup for %s: %w", name, err)
	}
	if resolve.IsNXDomain(err) {
		return nil, noSuchDomain(name)
	}
	// A not-found MX answer from a resolver that does not tell NXDOMAIN
	// apart (Go's reports "no MX records" like "no such domain") may still
	// be a domain with addresses: the address lookup below decides.
	hosts := make([]*net.MX, 0, len(mxs))
	for _, mx := range mxs {
		if mx != nil && strings.TrimSuffix(mx.Host, ".") != "" {
			hosts = append(hosts, mx)
		}
	}
	if len(mxs) > 0 && len(hosts) == 0 {
		return nil, &queue.PermanentError{Code: 556, Err: fmt.Errorf("5.1.10 %s does not accept mail (null MX, RFC 7505)", name)}
	}

	var sts *mtasts.Policy
	if policies {
		sts = d.domainPolicy(ctx, name)
	}
	if len(hosts) == 0 {
		// Implicit MX: the domain itself (RFC 5321 §5.1).
		ips, err := r.LookupHost(ctx, name)
		if err != nil && !isNotFound(err) {
			return nil, fmt.Errorf("deliver: address lookup for %s: %w", name, err)
		}
		if len(ips) == 0 {
			return nil, noSuchDomain(name)
		}
		var hp *hostPolicy
		if policies {
			// No DANE without a validated MX RRset (RFC 7672 §2.2.1).
			if hp, err = d.hostPolicyFor(ctx, name, name, portNum, false, sts); err != nil {
				return nil, err
			}
		}
		ts := make([]target, len(ips))
		for i, ip := range ips {
			ts[i] = target{addr: net.JoinHostPort(ip, port), name: name, policy: hp}
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
	var lastErr, policyErr error
	for _, mx := range hosts {
		host := strings.ToLower(strings.TrimSuffix(mx.Host, "."))
		var hp *hostPolicy
		if policies {
			if hp, err = d.hostPolicyFor(ctx, name, host, portNum, mxSecure, sts); err != nil {
				policyErr = err
				continue
			}
		}
		ips, err := r.LookupHost(ctx, host)
		if err != nil {
			lastErr = fmt.Errorf("deliver: look up MX host %s of %s: %w", host, name, err)
			continue
		}
		for _, ip := range ips {
			ts = append(ts, target{addr: net.JoinHostPort(ip, port), name: host, policy: hp})
		}
	}
	if len(ts) == 0 {
		switch {
		case policyErr != nil:
			// The reason an operator must see: a policy kept every host out.
			return nil, policyErr
		case lastErr == nil:
			lastErr = fmt.Errorf("deliver: no MX host of %s has an address", name)
		}
		return nil, lastErr
	}
	return ts, nil
}

// noSuchDomain fails the mail of a domain that does not exist.
func noSuchDomain(name string) error {
	return &queue.PermanentError{Code: 550, Err: fmt.Errorf("5.1.2 %s: no such domain (no MX or address records)", name)}
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}
