package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/mail"
	"strings"
	"time"
)

// Report is the JSON report of RFC 8460 §4.
type Report struct {
	OrganizationName string         `json:"organization-name"`
	DateRange        DateRange      `json:"date-range"`
	ContactInfo      string         `json:"contact-info"`
	ReportID         string         `json:"report-id"`
	Policies         []PolicyReport `json:"policies"`
}

// DateRange is the report's period.
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// PolicyReport is one policy's counts.
type PolicyReport struct {
	Policy         PolicyDesc      `json:"policy"`
	Summary        Summary         `json:"summary"`
	FailureDetails []FailureDetail `json:"failure-details,omitempty"`
}

// PolicyDesc names a policy.
type PolicyDesc struct {
	Type    PolicyType `json:"policy-type"`
	Strings []string   `json:"policy-string,omitempty"`
	Domain  string     `json:"policy-domain"`
	MXHost  string     `json:"mx-host,omitempty"`
}

// Summary counts sessions.
type Summary struct {
	Success int64 `json:"total-successful-session-count"`
	Failure int64 `json:"total-failure-session-count"`
}

// FailureDetail counts one kind of failure.
type FailureDetail struct {
	ResultType      string `json:"result-type"`
	ReceivingMXHost string `json:"receiving-mx-hostname,omitempty"`
	ReceivingIP     string `json:"receiving-ip,omitempty"`
	Count           int64  `json:"failed-session-count"`
	AdditionalInfo  string `json:"additional-information,omitempty"`
}

// Build makes domain's report for the period, from organization (the
// reporting relay's name) with contact as contact-info.
func (p *Period) Build(domain, organization, contact string) *Report {
	rep := &Report{
		OrganizationName: organization,
		DateRange:        DateRange{Start: p.Start.UTC(), End: p.End.UTC()},
		ContactInfo:      contact,
		ReportID:         fmt.Sprintf("%s_%s_%s", p.Start.UTC().Format("2006-01-02T15:04:05Z"), domain, randomHex()),
		Policies:         []PolicyReport{},
	}
	d := p.domains[domain]
	if d == nil {
		return rep
	}
	for _, pc := range d.policies {
		pr := PolicyReport{
			Policy:  PolicyDesc{Type: pc.typ, Strings: pc.strings, Domain: domain, MXHost: pc.mxHost},
			Summary: Summary{Success: pc.success},
		}
		for _, f := range pc.failures {
			pr.Summary.Failure += f.n
			pr.FailureDetails = append(pr.FailureDetails, FailureDetail{
				ResultType: f.resultType, ReceivingMXHost: f.mxHost, ReceivingIP: f.ip, Count: f.n, AdditionalInfo: f.detail,
			})
		}
		rep.Policies = append(rep.Policies, pr)
	}
	return rep
}

func randomHex() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ParseRUA reads the TXT records at _smtp._tls.<domain> (RFC 8460 §3):
// exactly one must start with "v=TLSRPTv1"; its rua is a comma-separated
// list of mailto: and https: URIs. It returns the mailto addresses.
func ParseRUA(records []string) ([]string, error) {
	var rec string
	n := 0
	for _, r := range records {
		if strings.HasPrefix(r, "v=TLSRPTv1;") || r == "v=TLSRPTv1" {
			rec = r
			n++
		}
	}
	switch {
	case n == 0:
		return nil, errors.New("no v=TLSRPTv1 record")
	case n > 1:
		return nil, fmt.Errorf("%d v=TLSRPTv1 records (one is allowed)", n)
	}
	var out []string
	for _, f := range strings.Split(rec, ";")[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok || strings.TrimSpace(k) != "rua" {
			continue
		}
		for _, u := range strings.Split(v, ",") {
			u = strings.TrimSpace(u)
			if a, ok := strings.CutPrefix(u, "mailto:"); ok {
				if addr, err := mail.ParseAddress(a); err == nil {
					out = append(out, addr.Address)
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("rua names no mailto: address")
	}
	return out, nil
}

// Message is the report mail of RFC 8460 §5.3: a multipart/report of type
// tlsrpt with a human-readable part and the gzipped JSON as
// application/tlsrpt+gzip, named submitter!domain!begin!end!id.json.gz.
// The result is a whole message with CRLF line ends.
func Message(rep *Report, domain, submitter, from, to string, now time.Time) ([]byte, error) {
	js, err := json.Marshal(rep)
	if err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(js)
	if err := zw.Close(); err != nil {
		return nil, err
	}
	boundary := "tlsrpt-" + randomHex()
	file := fmt.Sprintf("%s!%s!%d!%d!%s.json.gz", submitter, domain, rep.DateRange.Start.Unix(), rep.DateRange.End.Unix(), randomHex()[:8])
	var b strings.Builder
	h := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	h("From", from)
	h("To", to)
	h("Date", now.Format(time.RFC1123Z))
	h("Subject", fmt.Sprintf("Report Domain: %s Submitter: %s Report-ID: <%s>", domain, submitter, rep.ReportID))
	h("Message-ID", fmt.Sprintf("<tlsrpt.%s@%s>", randomHex(), submitter))
	h("TLS-Report-Domain", domain)
	h("TLS-Report-Submitter", submitter)
	h("MIME-Version", "1.0")
	h("Content-Type", mime.FormatMediaType("multipart/report", map[string]string{"report-type": "tlsrpt", "boundary": boundary}))
	b.WriteString("\r\n")
	b.WriteString("This is a multipart message in MIME format.\r\n\r\n--" + boundary + "\r\n")
	b.WriteString("Content-Type: text/plain; charset=us-ascii\r\n\r\n")
	fmt.Fprintf(&b, "This is an aggregate TLS report (RFC 8460) from %s for %s,\r\ncovering %s to %s.\r\n\r\n",
		submitter, domain, rep.DateRange.Start.Format(time.RFC3339), rep.DateRange.End.Format(time.RFC3339))
	b.WriteString("--" + boundary + "\r\n")
	h("Content-Type", "application/tlsrpt+gzip")
	h("Content-Transfer-Encoding", "base64")
	h("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": file}))
	b.WriteString("\r\n")
	enc := base64.StdEncoding.EncodeToString(gz.Bytes())
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--" + boundary + "--\r\n")
	return []byte(b.String()), nil
}
