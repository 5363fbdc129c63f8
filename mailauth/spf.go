package mailauth

import (
	"context"
	"errors"
	"net"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/relay-mta/relay/dkim"
)

// Resolver is the DNS client SPF and DMARC look records up with; both
// *net.Resolver and the relay's *resolve.Resolver are one. Not-found
// answers must be a *net.DNSError with IsNotFound, temporary failures
// one with IsTemporary (or IsTimeout), unwrapped: the SPF library tells
// "none" from "temperror" so.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Status is the result of one method, as Authentication-Results names
// it (RFC 8601 §2.7; RFC 7208 §2.6 for SPF, RFC 7489 §11.2 for DMARC).
type Status string

// The results of SPF (every one) and DMARC (none, pass, fail, temperror,
// permerror).
const (
	None      Status = "none"
	Neutral   Status = "neutral"
	Pass      Status = "pass"
	Fail      Status = "fail"
	SoftFail  Status = "softfail"
	TempError Status = "temperror"
	PermError Status = "permerror"
)

// SPFResult is the SPF verdict on one SMTP transaction.
type SPFResult struct {
	Status Status
	// HELO says the identity checked is the HELO name (MAIL FROM was
	// <>, RFC 7208 §2.4), not the MAIL FROM domain.
	HELO bool
	// Sender is the identity as recorded: the MAIL FROM address, or the
	// HELO name.
	Sender string
	// Domain is the domain the policy was looked up at, the one DMARC
	// aligns with the From domain (RFC 7489 §3.1.2).
	Domain string
	// Reason says why a temperror or permerror happened, for people.
	Reason string
}

// CheckSPF evaluates the SPF policy for a client at ip that said HELO
// helo and MAIL FROM mailFrom (an address, "" for the null path). When
// mailFrom is "" the HELO identity, postmaster@helo, is checked
// (RFC 7208 §2.3). ctx bounds the whole check (RFC 7208 §4.6.4 asks
// for at least 20 seconds). An identity that is no domain name is none; lookups
// that fail for now make temperror (§2.6.6), a record that cannot be
// evaluated or the lookup limits permerror (§4.6.4).
func CheckSPF(ctx context.Context, r Resolver, ip net.IP, helo, mailFrom string) SPFResult {
	res := SPFResult{Sender: mailFrom}
	sender := mailFrom
	if at := strings.LastIndexByte(mailFrom, '@'); at >= 0 {
		res.Domain = mailFrom[at+1:]
	}
	if mailFrom == "" || res.Domain == "" {
		// The null path (bounces) or <postmaster>: the HELO identity.
		res.HELO, res.Sender, res.Domain = true, helo, helo
		sender = "postmaster@" + helo
	}
	res.Domain = strings.ToLower(strings.TrimSuffix(res.Domain, "."))
	if !isDomainName(res.Domain) {
		// An address literal as HELO name, or garbage: nothing to look up.
		res.Status = None
		return res
	}
	status, err := spf.CheckHostWithSender(ip, res.Domain, sender,
		spf.WithContext(ctx), spf.WithResolver(r))
	res.Status = Status(status)
	if (res.Status == TempError || res.Status == PermError) && err != nil {
		res.Reason = err.Error()
		var de *net.DNSError
		if errors.As(err, &de) {
			res.Reason = de.Name + ": " + de.Err // without the server's address
		}
	}
	return res
}

// String renders r as an RFC 8601 resinfo:
//
//	spf=pass smtp.mailfrom=sender@a.test
//	spf=none smtp.helo=mx.a.test
func (r SPFResult) String() string {
	if r.HELO {
		return dkim.Verdict("spf", string(r.Status), r.Reason) + " smtp.helo=" + dkim.PValue(r.Sender)
	}
	return dkim.Verdict("spf", string(r.Status), r.Reason) + " smtp.mailfrom=" + dkim.PValue(r.Sender)
}

// isDomainName reports whether s is a plausible domain name with at least
// two labels: letters, digits, hyphens and underscores (as SPF records
// of _spf names need) between dots.
func isDomainName(s string) bool {
	if len(s) == 0 || len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
