package deliver

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/miekg/dns"
	"github.com/relay-mta/relay/queue"
	"github.com/relay-mta/relay/relay/dane"
	"github.com/relay-mta/relay/relay/mtasts"
	"github.com/relay-mta/relay/relay/tlsrpt"
)

// The TLS policies of MX deliveries: DANE (RFC 7672) for an MX host with
// validated TLSA records, else the recipient domain's MTA-STS policy
// (RFC 8461), else none (opportunistic TLS). DANE takes precedence, as
// RFC 8461 §2 asks. They apply to hops found by MX lookup whose TLS mode
// is opportunistic, never to explicit route addresses, which the
// operator's tls key governs.

// STSSource gives a recipient domain's MTA-STS policy in force, nil when
// it has none (*mtasts.Source is one).
type STSSource interface {
	Policy(ctx context.Context, domain string) *mtasts.Policy
}

// SecureResolver is a Resolver that reports DNSSEC validation (the AD bit
// of a validating resolver), which DANE needs (*resolve.Resolver is one).
type SecureResolver interface {
	LookupMXSecure(ctx context.Context, name string) ([]*net.MX, bool, error)
	LookupTLSA(ctx context.Context, name string) ([]*dns.TLSA, bool, error)
}

type policyKind int

const (
	policyNone policyKind = iota
	policySTSTesting
	policySTSEnforce
	policyDANE
)

// hostPolicy is the TLS policy of one MX host of a recipient domain.
type hostPolicy struct {
	domain string
	kind   policyKind
	sts    *mtasts.Policy // policySTS*
	tlsa   []dane.Record  // policyDANE
}

// label names the policy in replies and in `relay queue show`.
func (p *hostPolicy) label() string {
	switch p.kind {
	case policyDANE:
		return "DANE"
	case policySTSEnforce:
		return "MTA-STS enforce"
	case policySTSTesting:
		return "MTA-STS testing"
	}
	return "none"
}

// enforced: the host must give a verified TLS session, or no mail.
func (p *hostPolicy) enforced() bool {
	return p != nil && (p.kind == policyDANE || p.kind == policySTSEnforce)
}

// deferErr is the error that defers mail a policy kept from going.
func (p *hostPolicy) deferErr(status, format string, args ...any) error {
	return &queue.TemporaryError{Code: 451, Err: fmt.Errorf("%s %s policy of %s: %s", status, p.label(), p.domain, fmt.Sprintf(format, args...))}
}

// domainPolicy is the MTA-STS policy of domain when MTA-STS is on.
func (d *Deliverer) domainPolicy(ctx context.Context, domain string) *mtasts.Policy {
	if d.STS == nil {
		return nil
	}
	return d.STS.Policy(ctx, domain)
}

// hostPolicyFor decides the policy of MX host of domain. mxSecure says
// the MX answer was validated. An error means this host must not be used
// (its TLSA lookup failed: RFC 7672 §2.2 forbids falling back to
// anything less), and carries the reason.
func (d *Deliverer) hostPolicyFor(ctx context.Context, domain, host string, port int, mxSecure bool, sts *mtasts.Policy) (*hostPolicy, error) {
	hp := &hostPolicy{domain: domain}
	if sr, ok := d.Resolver.(SecureResolver); ok && d.DANE && mxSecure {
		name := "_" + strconv.Itoa(port) + "._tcp." + host
		rrs, secure, err := sr.LookupTLSA(ctx, name)
		var de *net.DNSError
		switch {
		case err == nil && secure:
			hp.kind, hp.tlsa = policyDANE, dane.Usable(rrs)
			if len(hp.tlsa) == 0 {
				// RFC 7672 §2.2: TLS is still mandatory, but nothing can
				// authenticate the server; we defer rather than guess.
				d.report(hp, host, "", tlsrpt.TLSAInvalid, "no usable TLSA record at "+name)
				return nil, hp.deferErr("4.7.5", "no usable TLSA record at %s", name)
			}
			return hp, nil
		case err != nil && errors.As(err, &de) && de.IsNotFound:
			// No TLSA (authenticated or not): no DANE for this host.
		case err != nil:
			hp.kind = policyDANE
			d.report(hp, host, "", tlsrpt.DNSSECInvalid, err.Error())
			return nil, hp.deferErr("4.7.5", "TLSA lookup for %s failed (%v); not delivering without it", host, err)
		}
	}
	if sts != nil {
		hp.sts = sts
		hp.kind = policySTSTesting
		if sts.Mode == mtasts.Enforce {
			hp.kind = policySTSEnforce
		}
		if !sts.Matches(host) {
			d.report(hp, host, "", tlsrpt.ValidationFailure, "MX host "+host+" is not listed in the MTA-STS policy")
			if hp.kind == policySTSEnforce {
				return nil, hp.deferErr("4.7.5", "MX host %s is not listed in the policy (mx: %s)", host, strings.Join(sts.MX, ", "))
			}
		}
	}
	return hp, nil
}

// report passes the outcome of a session attempt with host (at addr, ""
// when none was reached) to Report.
func (d *Deliverer) report(p *hostPolicy, host, addr, failure, detail string) {
	if d.Report == nil || p == nil {
		return
	}
	res := tlsrpt.Result{PolicyDomain: p.domain, MXHost: host, Failure: failure, Detail: detail, PolicyType: tlsrpt.PolicyNotFound}
	if h, _, err := net.SplitHostPort(addr); err == nil {
		res.ReceivingIP = h
	}
	switch p.kind {
	case policyDANE:
		res.PolicyType = tlsrpt.PolicyTLSA
		for _, r := range p.tlsa {
			res.PolicyStrings = append(res.PolicyStrings, r.String())
		}
	case policySTSEnforce, policySTSTesting:
		res.PolicyType = tlsrpt.PolicySTS
		res.PolicyStrings = p.sts.Lines()
	}
	d.Report(res)
}

// certFailure is the TLS-RPT result type of a certificate that did not
// verify.
func certFailure(err error) string {
	var host x509.HostnameError
	var inv x509.CertificateInvalidError
	var unk x509.UnknownAuthorityError
	switch {
	case errors.As(err, &host):
		return tlsrpt.CertificateHostMismatch
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return tlsrpt.CertificateExpired
	case errors.As(err, &unk):
		return tlsrpt.CertificateNotTrusted
	}
	return tlsrpt.ValidationFailure
}
