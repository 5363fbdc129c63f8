package resolve

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/miekg/dns"
)

// LookupMX returns the MX records of name, in no particular order (the
// caller sorts and shuffles, RFC 5321 §5.1). A null MX (RFC 7505) is one
// record with host ".".
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mxs, _, err := r.LookupMXSecure(ctx, name)
	return mxs, err
}

// LookupMXSecure is LookupMX that also says whether the answer was
// DNSSEC-validated (RFC 7672 §2.2.1: DANE applies only to a secure MX
// RRset).
func (r *Resolver) LookupMXSecure(ctx context.Context, name string) ([]*net.MX, bool, error) {
	a, err := r.Query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, a.Secure, err
	}
	out := make([]*net.MX, 0, len(a.RRs))
	for _, rr := range a.RRs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, a.Secure, nil
}

// LookupHost returns the IPv4 then the IPv6 addresses of host. It fails
// only when both lookups fail: with IsNotFound when neither record type
// exists, else with the temporary error.
func (r *Resolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	var out []string
	var errs [2]error
	for i, t := range [2]uint16{dns.TypeA, dns.TypeAAAA} {
		a, err := r.Query(ctx, host, t)
		errs[i] = err
		for _, rr := range a.RRs {
			switch rr := rr.(type) {
			case *dns.A:
				out = append(out, rr.A.String())
			case *dns.AAAA:
				out = append(out, rr.AAAA.String())
			}
		}
		if IsNXDomain(err) {
			break // no AAAA either
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	for _, err := range errs {
		var de *net.DNSError
		if errors.As(err, &de) && !de.IsNotFound {
			return nil, err
		}
	}
	return nil, errs[0]
}

// LookupTXT returns the TXT records of name, the strings of each record
// joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	a, err := r.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(a.RRs))
	for _, rr := range a.RRs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

// LookupTLSA returns the TLSA records at name ("_25._tcp.mx.example.")
// and whether the answer was validated. A name without TLSA records is a
// *net.DNSError with IsNotFound and may still be secure (an authenticated
// denial: the host has no DANE, for certain).
func (r *Resolver) LookupTLSA(ctx context.Context, name string) ([]*dns.TLSA, bool, error) {
	a, err := r.Query(ctx, name, dns.TypeTLSA)
	if err != nil {
		return nil, a.Secure, err
	}
	out := make([]*dns.TLSA, 0, len(a.RRs))
	for _, rr := range a.RRs {
		out = append(out, rr.(*dns.TLSA))
	}
	return out, a.Secure, nil
}

// LookupIPAddr is LookupHost with the addresses parsed, as
// *net.Resolver has it (SPF's a and mx mechanisms, package mailauth).
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	hosts, err := r.LookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]net.IPAddr, 0, len(hosts))
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			out = append(out, net.IPAddr{IP: ip})
		}
	}
	return out, nil
}

// LookupAddr returns the names of addr's PTR records (SPF's ptr
// mechanism and %{p} macro).
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	name, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: addr, IsNotFound: true}
	}
	a, err := r.Query(ctx, name, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(a.RRs))
	for _, rr := range a.RRs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}
