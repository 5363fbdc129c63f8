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
)

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
		if err != nil && !strings.ContainsAny(a, ":[]") {
			// A bare name in a route's list of next hops: its MX hosts,
			// in preference order, on port 25 (route failover).
			mts, err := d.mxTargets(ctx, a, 25)
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
