// Package tlsrpt implements SMTP TLS Reporting (RFC 8460) for the sending
// side: it counts the outcome of every TLS session attempt made under a
// policy (MTA-STS, DANE, or none found), per policy domain, and turns a
// period's counts into the RFC's JSON report, gzipped and wrapped in the
// multipart/report message the relay queues for the domain's mailto: rua.
//
// Counts are kept in memory: a restart loses the current period's counts
// (the report of that day is then partial), which the RFC tolerates
// better than a report the relay would have to store per session.
package tlsrpt

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// PolicyType is the policy-type of a report (RFC 8460 §4.4).
type PolicyType string

// The policy types.
const (
	PolicySTS      PolicyType = "sts"
	PolicyTLSA     PolicyType = "tlsa"
	PolicyNotFound PolicyType = "no-policy-found"
)

// Result types (RFC 8460 §4.3) the relay reports.
const (
	StartTLSNotSupported    = "starttls-not-supported"
	CertificateHostMismatch = "certificate-host-mismatch"
	CertificateExpired      = "certificate-expired"
	CertificateNotTrusted   = "certificate-not-trusted"
	ValidationFailure       = "validation-failure"
	TLSAInvalid             = "tlsa-invalid"
	DNSSECInvalid           = "dnssec-invalid"
	STSWebPKIInvalid        = "sts-webpki-invalid"
	STSPolicyFetchError     = "sts-policy-fetch-error"
	STSPolicyInvalid        = "sts-policy-invalid"
)

// Result is the outcome of one attempt at a TLS session with an MX host
// of a policy domain.
type Result struct {
	PolicyDomain  string
	PolicyType    PolicyType
	PolicyStrings []string // the TLSA records, or the MTA-STS policy's lines
	MXHost        string
	ReceivingIP   string
	// Failure is "" for a successful session, else a result type.
	Failure string
	Detail  string // additional-information, for failures
}

// Limits that keep the recorder's memory bounded whatever the traffic:
// past them new domains, policies or failure kinds are not counted.
const (
	maxDomains         = 10000
	maxPoliciesPerDom  = 16
	maxFailuresPerPol  = 32
	maxDetailLen       = 200
	maxPolicyStringLen = 20
)

// Recorder counts results for the current period. It is safe for
// concurrent use.
type Recorder struct {
	mu      sync.Mutex
	start   time.Time
	domains map[string]*domainCounts
}

type domainCounts struct {
	policies []*policyCounts
}

type policyCounts struct {
	typ      PolicyType
	strings  []string
	mxHost   string
	success  int64
	failures []*failureCount
}

type failureCount struct {
	resultType, mxHost, ip, detail string
	n                              int64
}

// NewRecorder starts a period at now.
func NewRecorder(now time.Time) *Recorder {
	return &Recorder{start: now, domains: map[string]*domainCounts{}}
}

// Record counts one result.
func (r *Recorder) Record(res Result) {
	dom := strings.ToLower(strings.TrimSuffix(res.PolicyDomain, "."))
	if dom == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.domains[dom]
	if d == nil {
		if len(r.domains) >= maxDomains {
			return
		}
		d = &domainCounts{}
		r.domains[dom] = d
	}
	strs := res.PolicyStrings
	if len(strs) > maxPolicyStringLen {
		strs = strs[:maxPolicyStringLen]
	}
	// An MTA-STS policy is one per domain; a TLSA policy is one per MX
	// host (RFC 8460 §4.4: mx-host is set for tlsa).
	mx := ""
	if res.PolicyType == PolicyTLSA {
		mx = res.MXHost
	}
	var p *policyCounts
	for _, q := range d.policies {
		if q.typ == res.PolicyType && q.mxHost == mx && slices.Equal(q.strings, strs) {
			p = q
			break
		}
	}
	if p == nil {
		if len(d.policies) >= maxPoliciesPerDom {
			return
		}
		p = &policyCounts{typ: res.PolicyType, strings: slices.Clone(strs), mxHost: mx}
		d.policies = append(d.policies, p)
	}
	if res.Failure == "" {
		p.success++
		return
	}
	detail := res.Detail
	if len(detail) > maxDetailLen {
		detail = detail[:maxDetailLen]
	}
	for _, f := range p.failures {
		if f.resultType == res.Failure && f.mxHost == res.MXHost && f.ip == res.ReceivingIP {
			f.n++
			f.detail = detail
			return
		}
	}
	if len(p.failures) < maxFailuresPerPol {
		p.failures = append(p.failures, &failureCount{resultType: res.Failure, mxHost: res.MXHost, ip: res.ReceivingIP, detail: detail, n: 1})
	}
}

// Period is what a Recorder counted between Start and End.
type Period struct {
	Start, End time.Time
	domains    map[string]*domainCounts
}

// Domains lists the policy domains with counts, sorted.
func (p *Period) Domains() []string {
	out := make([]string, 0, len(p.domains))
	for d := range p.domains {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// Take ends the current period at now and starts the next.
func (r *Recorder) Take(now time.Time) *Period {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := &Period{Start: r.start, End: now, domains: r.domains}
	r.start, r.domains = now, map[string]*domainCounts{}
	return p
}
