package mailauth

import (
	"github.com/relay-mta/relay/dkim"
)

// Results are one relay's verdicts on one message: what goes into its
// Authentication-Results field, and into the ARC-Authentication-Results
// of the ARC set it adds.
type Results struct {
	DKIM  []dkim.Result // one per signature; none for unsigned mail
	SPF   *SPFResult    // nil: not checked
	DMARC *DMARCResult  // nil: not checked
	// ARC is the verdict on the ARC chain as dkim.ARCResult.String
	// writes it; "": none recorded.
	ARC string
}

// Resinfo returns the verdicts as RFC 8601 resinfo, in the order
// they are reached: dkim, spf, dmarc, arc.
func (r Results) Resinfo() []string {
	var out []string
	for _, d := range r.DKIM {
		out = append(out, d.String())
	}
	if r.SPF != nil {
		out = append(out, r.SPF.String())
	}
	if r.DMARC != nil {
		out = append(out, r.DMARC.String())
	}
	if r.ARC != "" {
		out = append(out, r.ARC)
	}
	return out
}

// Field is the Authentication-Results field of the relay authservID
// with every verdict, CRLF included, or "" when there is none to record
// (unsigned mail with SPF and DMARC off gets no field: every hop would
// add "none" otherwise).
func (r Results) Field(authservID string) string {
	resinfo := r.Resinfo()
	if len(resinfo) == 0 {
		return ""
	}
	return dkim.AuthResultsField(authservID, resinfo)
}

// PassingDomains returns the d= domains of the passing signatures among
// results, for DMARC.
func PassingDomains(results []dkim.Result) []string {
	var out []string
	for _, r := range results {
		if r.Status == dkim.Pass {
			out = append(out, r.Domain)
		}
	}
	return out
}
