package mailauth

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strings"

	"github.com/emersion/go-msgauth/dmarc"
	"github.com/relay-mta/relay/dkim"
	"golang.org/x/net/publicsuffix"
)

// DMARCResult is the DMARC verdict on one message.
type DMARCResult struct {
	// Status is none (no policy), pass (an aligned SPF or DKIM pass),
	// fail, temperror or permerror (a record that cannot be parsed).
	Status Status
	// From is the author domain, of the From field.
	From string
	// Record is the domain whose _dmarc record applied: From or its
	// organizational domain; "" when none did.
	Record string
	// Policy is the policy the domain asks for failing mail: p=, or sp=
	// when the record is the organizational domain's and From a
	// subdomain of it (RFC 7489 §6.3).
	Policy dmarc.Policy
	// Disposition is what a receiver applying the policy does with this
	// message: none for a pass, else Policy after pct= sampling, which
	// lowers reject to quarantine and quarantine to none for the mail
	// outside the sample (RFC 7489 §6.6.4).
	Disposition dmarc.Policy
	// DKIMAligned and SPFAligned say which passing identifier aligned.
	DKIMAligned, SPFAligned bool
	// Reason says why a temperror or permerror happened.
	Reason string
}

// DMARCInput is what DMARC judges a message on.
type DMARCInput struct {
	// From is the author domain: the domain of the single address of
	// the From field (dkim.FromDomain).
	From string
	// DKIM are the d= domains of the message's passing DKIM signatures.
	DKIM []string
	// SPF is the SPF verdict of the transaction.
	SPF SPFResult
	// Sample returns a number in [0, 100) for pct= sampling; nil: a
	// random one.
	Sample func() int
}

// CheckDMARC looks up the DMARC policy of in.From (RFC 7489 §6.6.3: at
// _dmarc.<From>, then at _dmarc.<organizational domain>) and judges the
// message by it: pass when a passing DKIM signature's d= or the SPF
// domain (on an SPF pass) is aligned with From, relaxed (same
// organizational domain) or strict (the same name) as adkim= and aspf=
// say. No record, or more than one, is none; a lookup that failed for
// now is temperror.
func CheckDMARC(ctx context.Context, r Resolver, in DMARCInput) DMARCResult {
	from := normalize(in.From)
	res := DMARCResult{From: from, Status: None}
	org := OrganizationalDomain(from)
	rec, at, err := lookupDMARC(ctx, r, from)
	if err == nil && rec == nil && org != from {
		rec, at, err = lookupDMARC(ctx, r, org)
	}
	var temp dmarcTempError
	switch {
	case errors.As(err, &temp):
		res.Status, res.Reason = TempError, err.Error()
		return res
	case err != nil:
		res.Status, res.Reason = PermError, err.Error()
		return res
	case rec == nil:
		return res
	}
	res.Record = at
	res.Policy = rec.Policy
	if at != from && rec.SubdomainPolicy != "" {
		res.Policy = rec.SubdomainPolicy
	}
	for _, d := range in.DKIM {
		res.DKIMAligned = res.DKIMAligned || aligned(normalize(d), from, rec.DKIMAlignment)
	}
	res.SPFAligned = in.SPF.Status == Pass && aligned(normalize(in.SPF.Domain), from, rec.SPFAlignment)
	if res.DKIMAligned || res.SPFAligned {
		res.Status, res.Disposition = Pass, dmarc.PolicyNone
		return res
	}
	res.Status, res.Disposition = Fail, res.Policy
	if rec.Percent != nil && *rec.Percent < 100 {
		sample := in.Sample
		if sample == nil {
			sample = func() int { return rand.IntN(100) }
		}
		if sample() >= *rec.Percent {
			switch res.Policy {
			case dmarc.PolicyReject:
				res.Disposition = dmarc.PolicyQuarantine
			case dmarc.PolicyQuarantine:
				res.Disposition = dmarc.PolicyNone
			}
		}
	}
	return res
}

// lookupDMARC returns the DMARC record of domain, or nil when it has
// none or more than one (RFC 7489 §6.6.3: then no policy applies). TXT
// records not starting with "v=DMARC1" are not DMARC records.
func lookupDMARC(ctx context.Context, r Resolver, domain string) (*dmarc.Record, string, error) {
	name := "_dmarc." + domain
	txts, err := r.LookupTXT(ctx, name)
	var de *net.DNSError
	switch {
	case errors.As(err, &de) && de.IsNotFound:
		return nil, "", nil
	case err != nil:
		return nil, "", dmarcTempError{name + ": " + errText(err)}
	}
	var found []string
	for _, t := range txts {
		if v, _, _ := strings.Cut(t, ";"); strings.TrimSpace(v) == "v=DMARC1" {
			found = append(found, t)
		}
	}
	if len(found) != 1 {
		return nil, "", nil
	}
	rec, err := dmarc.Parse(found[0])
	if err != nil {
		return nil, "", errors.New(name + ": " + strings.TrimPrefix(err.Error(), "dmarc: "))
	}
	return rec, domain, nil
}

// dmarcTempError is a lookup that failed for now.
type dmarcTempError struct{ msg string }

func (e dmarcTempError) Error() string { return e.msg }

// errText is a DNS error without the server's address.
func errText(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) {
		return de.Err
	}
	return err.Error()
}

// OrganizationalDomain is the organizational domain of domain (RFC 7489
// §3.2): its registrable part, one label below its public suffix by the
// Public Suffix List; a public suffix is its own.
func OrganizationalDomain(domain string) string {
	domain = normalize(domain)
	org, err := publicsuffix.EffectiveTLDPlusOne(domain)
	if err != nil {
		return domain
	}
	return org
}

// aligned reports whether the authenticated domain d is aligned with the
// author domain from (RFC 7489 §3.1): the same name in strict mode, the
// same organizational domain in relaxed mode.
func aligned(d, from string, mode dmarc.AlignmentMode) bool {
	if d == "" {
		return false
	}
	if mode == dmarc.AlignmentStrict {
		return d == from
	}
	return OrganizationalDomain(d) == OrganizationalDomain(from)
}

func normalize(d string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
}

// String renders r as an RFC 8601 resinfo, with the policy and the
// disposition in a comment as OpenDMARC writes them:
//
//	dmarc=fail (p=reject dis=reject) header.from=a.test
func (r DMARCResult) String() string {
	s := dkim.Verdict("dmarc", string(r.Status), r.Reason)
	if r.Policy != "" {
		s += " (p=" + string(r.Policy) + " dis=" + strings.ToLower(string(r.Disposition)) + ")"
	}
	return s + " header.from=" + dkim.PValue(r.From)
}
