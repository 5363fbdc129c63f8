package tlsrpt

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseRUA(t *testing.T) {
	got, err := ParseRUA([]string{"v=spf1 -all", "v=TLSRPTv1; rua=mailto:tls@a.test,https://r.a.test/x, mailto:other@b.test"})
	if err != nil || len(got) != 2 || got[0] != "tls@a.test" || got[1] != "other@b.test" {
		t.Fatalf("got %q, %v", got, err)
	}
	for name, recs := range map[string][]string{
		"none":       {"v=spf1"},
		"two":        {"v=TLSRPTv1; rua=mailto:a@a.test", "v=TLSRPTv1; rua=mailto:b@a.test"},
		"https only": {"v=TLSRPTv1; rua=https://r.a.test/x"},
		"bad mailto": {"v=TLSRPTv1; rua=mailto:not an address"},
	} {
		if _, err := ParseRUA(recs); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRecorder(t *testing.T) {
	t0 := time.Unix(2e9, 0)
	r := NewRecorder(t0)
	sts := []string{"version: STSv1", "mode: enforce"}
	for range 3 {
		r.Record(Result{PolicyDomain: "A.test.", PolicyType: PolicySTS, PolicyStrings: sts, MXHost: "mx.a.test"})
	}
	r.Record(Result{PolicyDomain: "a.test", PolicyType: PolicySTS, PolicyStrings: sts, MXHost: "mx.a.test", ReceivingIP: "192.0.2.1", Failure: StartTLSNotSupported, Detail: "no"})
	r.Record(Result{PolicyDomain: "a.test", PolicyType: PolicySTS, PolicyStrings: sts, MXHost: "mx.a.test", ReceivingIP: "192.0.2.1", Failure: StartTLSNotSupported, Detail: "again"})
	r.Record(Result{PolicyDomain: "b.test", PolicyType: PolicyTLSA, PolicyStrings: []string{"3 1 1 ab"}, MXHost: "mx1.b.test"})
	r.Record(Result{PolicyDomain: "b.test", PolicyType: PolicyTLSA, PolicyStrings: []string{"3 1 1 cd"}, MXHost: "mx2.b.test", Failure: ValidationFailure})
	p := r.Take(t0.Add(24 * time.Hour))
	if d := p.Domains(); len(d) != 2 || d[0] != "a.test" || d[1] != "b.test" {
		t.Fatalf("domains %v", d)
	}
	rep := p.Build("a.test", "relay.test", "mailto:postmaster@relay.test")
	if len(rep.Policies) != 1 {
		t.Fatalf("%+v", rep)
	}
	pol := rep.Policies[0]
	if pol.Summary != (Summary{Success: 3, Failure: 2}) || len(pol.FailureDetails) != 1 || pol.FailureDetails[0].Count != 2 ||
		pol.FailureDetails[0].AdditionalInfo != "again" || pol.Policy.MXHost != "" || !rep.DateRange.End.Equal(t0.Add(24*time.Hour)) {
		t.Errorf("a.test: %+v", rep)
	}
	// TLSA policies are per MX host.
	if rep := p.Build("b.test", "relay.test", ""); len(rep.Policies) != 2 || rep.Policies[0].Policy.MXHost != "mx1.b.test" {
		t.Errorf("b.test: %+v", rep)
	}
	// The next period starts empty.
	if d := r.Take(t0.Add(48 * time.Hour)).Domains(); len(d) != 0 {
		t.Errorf("next period: %v", d)
	}
	// Bounded: past maxDomains, new domains are not counted.
	for i := range maxDomains + 10 {
		r.Record(Result{PolicyDomain: fmt.Sprintf("d%d.test", i), PolicyType: PolicyNotFound})
	}
	if n := len(r.Take(t0).Domains()); n != maxDomains {
		t.Errorf("%d domains counted, want the cap %d", n, maxDomains)
	}
}

func TestMessage(t *testing.T) {
	p := NewRecorder(time.Unix(2e9, 0)).Take(time.Unix(2e9+86400, 0))
	rep := p.Build("a.test", "relay.test", "")
	msg, err := Message(rep, "a.test", "relay.test", "postmaster@relay.test", "tls@a.test", time.Unix(2e9+86400, 0))
	if err != nil {
		t.Fatal(err)
	}
	s := string(msg)
	for _, want := range []string{
		"TLS-Report-Domain: a.test\r\n", "TLS-Report-Submitter: relay.test\r\n",
		"Subject: Report Domain: a.test Submitter: relay.test Report-ID: <" + rep.ReportID + ">\r\n",
		"report-type=tlsrpt", "Content-Type: application/tlsrpt+gzip\r\n",
		`filename=relay.test!a.test!2000000000!2000086400!`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("message lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(strings.ReplaceAll(s, "\r\n", ""), "\n") {
		t.Error("a bare LF in the message")
	}
}
