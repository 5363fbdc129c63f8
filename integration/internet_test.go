package integration

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relay-mta/relay/internal/testca"
	"github.com/relay-mta/relay/relay/resolve/dnstest"
	"github.com/relay-mta/relay/relay/tlsrpt"
	"github.com/relay-mta/relay/spool"
)

// Delivering to the Internet, against a real DNS server: unbound on
// 127.0.26.1 serving zones written here (two of them signed, so that
// unbound validates them and sets the AD bit DANE relies on), MX hosts
// that are relays on 127.0.26.x:25, and an MTA-STS policy server over
// HTTPS with a test CA the sending relay gets as [tls] ca_file.
//
//	mx.test      MX 10 mx1 (nothing listens), 20 mx2 (relay), 30 mx3 (a counter):
//	             delivered through mx2 in the first attempt, mx3 never contacted
//	nullmx.test  null MX: failed, DSN 5.1.10
//	nosuch.mx.test  NXDOMAIN: failed, DSN 5.1.2
//	broken.test  DNSSEC-bogus: SERVFAIL, deferred
//	sts.test     MTA-STS enforce, its MX offers no STARTTLS: deferred, never sent in plaintext
//	sts2.test    MTA-STS enforce, MX with a certificate from the test CA: delivered
//	sts3.test    MTA-STS testing, MX without STARTTLS: delivered (and reported)
//	sts4.test    MTA-STS enforce, MX host not in the policy: deferred
//	sts5.test    MTA-STS enforce, certificate for other names: deferred
//	dane.test    signed, TLSA 3 1 1 of the MX's key: delivered (self-signed certificate)
//	dane2.test   signed, TLSA 3 1 1 of another key: deferred
//	dane3.test   signed, its MX's TLSA lookup SERVFAILs: deferred, never sent
//
// and the TLS reports (RFC 8460) of sts.test, dane.test and dane2.test
// arrive as mail at the rua they publish.
func TestInternetDelivery(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("MX hosts listen on port 25, which needs root")
	}
	dir := t.TempDir()
	ca := testca.New(t)
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o644)
	// One certificate for the TLS-speaking MX relay, from the test CA.
	// Under DANE the CA does not matter: the TLSA record names its key.
	mx := ca.Issue(t, "mx1.sts2.test", "mx.dane.test", "mx.dane2.test")
	mxCertFile, mxKeyFile := filepath.Join(dir, "mx.pem"), filepath.Join(dir, "mx.key")
	os.WriteFile(mxCertFile, mx.CertPEM, 0o644)
	os.WriteFile(mxKeyFile, mx.KeyPEM, 0o600)
	spki := sha256.Sum256(mx.Leaf.RawSubjectPublicKeyInfo)
	other := sha256.Sum256([]byte("some other key"))

	// The MTA-STS policy server, for mta-sts.sts.test and mta-sts.sts2.test.
	https := ca.Issue(t, "mta-sts.sts.test", "mta-sts.sts2.test", "mta-sts.sts3.test", "mta-sts.sts4.test", "mta-sts.sts5.test")
	hl, err := tls.Listen("tcp", "127.0.26.4:0", &tls.Config{Certificates: []tls.Certificate{https.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	var fetches atomic.Int32
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		host, _, _ := net.SplitHostPort(r.Host)
		dom := strings.TrimPrefix(host, "mta-sts.")
		if r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		mode := "enforce"
		if dom == "sts3.test" {
			mode = "testing"
		}
		fmt.Fprintf(w, "version: STSv1\r\nmode: %s\r\nmx: mx1.%s\r\nmax_age: 86400\r\n", mode, dom)
	})}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })
	_, httpsPort, _ := net.SplitHostPort(hl.Addr().String())

	rua := `_smtp._tls TXT "v=TLSRPTv1; rua=mailto:bob@a.test"`
	srv := dnstest.Start(t, "127.0.26.1",
		dnstest.Zone{Name: "mx.test", Records: []string{
			"@ MX 10 mx1", "@ MX 20 mx2", "@ MX 30 mx3",
			"mx1 A 127.0.26.10", "mx2 A 127.0.26.11", "mx3 A 127.0.26.12",
		}},
		dnstest.Zone{Name: "nullmx.test", Records: []string{"@ MX 0 .", "@ A 127.0.26.11"}},
		dnstest.Zone{Name: "broken.test", Bogus: true, Records: []string{"@ MX 10 mx", "mx A 127.0.26.11"}},
		dnstest.Zone{Name: "sts.test", Records: []string{
			"@ MX 10 mx1", "mx1 A 127.0.26.20", "mta-sts A 127.0.26.4", `_mta-sts TXT "v=STSv1; id=20261205"`, rua,
		}},
		dnstest.Zone{Name: "sts3.test", Records: []string{ // mode testing
			"@ MX 10 mx1", "mx1 A 127.0.26.20", "mta-sts A 127.0.26.4", `_mta-sts TXT "v=STSv1; id=1"`,
		}},
		dnstest.Zone{Name: "sts4.test", Records: []string{ // the policy lists mx1, the MX is mx9
			"@ MX 10 mx9", "mx9 A 127.0.26.21", "mta-sts A 127.0.26.4", `_mta-sts TXT "v=STSv1; id=1"`,
		}},
		dnstest.Zone{Name: "sts5.test", Records: []string{ // the MX's certificate does not name mx1.sts5.test
			"@ MX 10 mx1", "mx1 A 127.0.26.21", "mta-sts A 127.0.26.4", `_mta-sts TXT "v=STSv1; id=1"`,
		}},
		dnstest.Zone{Name: "sts2.test", Records: []string{
			"@ MX 10 mx1", "mx1 A 127.0.26.21", "mta-sts A 127.0.26.4", `_mta-sts TXT "v=STSv1; id=20261205"`,
		}},
		dnstest.Zone{Name: "dane.test", Signed: true, Records: []string{
			"@ MX 10 mx", "mx A 127.0.26.30", "_25._tcp.mx TLSA 3 1 1 " + hex.EncodeToString(spki[:]), rua,
		}},
		dnstest.Zone{Name: "dane2.test", Signed: true, Records: []string{
			"@ MX 10 mx", "mx A 127.0.26.31", "_25._tcp.mx TLSA 3 1 1 " + hex.EncodeToString(other[:]), rua,
		}},
		// The TLSA records of dane3's MX sit in a zone that fails
		// validation: their lookup SERVFAILs.
		dnstest.Zone{Name: "dane3.test", Signed: true, Records: []string{"@ MX 10 mx", "mx A 127.0.26.32"}},
		dnstest.Zone{Name: "_25._tcp.mx.dane3.test", Bogus: true, Records: []string{"@ TLSA 3 1 1 " + hex.EncodeToString(spki[:])}},
	)

	// mx3 of mx.test must never be contacted: a plain listener counts.
	l3, err := net.Listen("tcp", "127.0.26.12:25")
	if err != nil {
		t.Skipf("cannot listen on port 25: %v", err)
	}
	defer l3.Close()
	var mx3 atomic.Int32
	go func() {
		for {
			c, err := l3.Accept()
			if err != nil {
				return
			}
			mx3.Add(1)
			c.Close()
		}
	}()

	// The MX relays: plain (mx2 of mx.test, the MX of sts.test) and with
	// TLS (sts2.test, dane.test, dane2.test).
	plain := newNode(t, "plainmx", "127.0.26.11")
	plain.cfg.SMTP.Listen = []string{"127.0.26.11:25", "127.0.26.20:25"}
	plain.cfg.LocalDomains = []string{"mx.test", "sts.test", "sts3.test"}
	plain.start()
	secure := newNode(t, "tlsmx", "127.0.26.21")
	secure.cfg.SMTP.Listen = []string{"127.0.26.21:25", "127.0.26.30:25", "127.0.26.31:25", "127.0.26.32:25"}
	secure.cfg.LocalDomains = []string{"sts2.test", "sts4.test", "sts5.test", "dane.test", "dane2.test", "dane3.test"}
	secure.cfg.TLS.Cert, secure.cfg.TLS.Key = mxCertFile, mxKeyFile
	secure.start()

	a := newNode(t, "a", "127.0.26.2")
	a.realDNS = true
	a.cfg.DNS.Servers = []string{srv.Addr}
	a.cfg.DNS.Timeout = 2 * time.Second
	a.cfg.TLS.CAFile = caFile
	a.cfg.MTASTS.Port = atoi(t, httpsPort)
	a.cfg.TLSRPT.Interval = 3 * time.Second
	a.cfg.Queue.RetryMin = time.Minute // a second attempt would come too late to pass
	a.cfg.Queue.RetryMax = time.Hour
	a.start()

	ids := map[string]string{}
	for _, c := range []struct{ subject, to string }{
		{"mx-failover", "bob@mx.test"}, {"null-mx", "bob@nullmx.test"}, {"nxdomain", "bob@nosuch.mx.test"},
		{"servfail", "bob@broken.test"}, {"sts-plain", "bob@sts.test"}, {"sts-tls", "bob@sts2.test"},
		{"dane-ok", "bob@dane.test"}, {"dane-bad", "bob@dane2.test"}, {"tlsa-servfail", "bob@dane3.test"},
		{"sts-testing", "bob@sts3.test"}, {"sts-unlisted", "bob@sts4.test"}, {"sts-badcert", "bob@sts5.test"},
	} {
		id, err := sendOne(a.addr, "alice@a.test", c.to, fmt.Sprintf("Subject: %s\r\nMessage-ID: <%s@a.test>\r\n\r\nbody\r\n", c.subject, c.subject))
		if err != nil {
			t.Fatalf("send %s: %v", c.subject, err)
		}
		ids[c.subject] = id
	}

	// Delivered, in the first attempt (the retry would be a minute later).
	waitFor(t, 20*time.Second, "mx-failover at mx2", func() bool { return countCopies(plain.mailbox("bob"))["mx-failover"] == 1 })
	waitFor(t, 20*time.Second, "sts-tls, dane-ok at the TLS MX", func() bool {
		got := countCopies(secure.mailbox("bob"))
		return got["sts-tls"] == 1 && got["dane-ok"] == 1
	})
	if n := mx3.Load(); n != 0 {
		t.Errorf("mx3 (preference 30) was contacted %d times although mx2 (20) took the mail", n)
	}
	// Failed with the precise codes: DSNs to alice.
	waitFor(t, 20*time.Second, "two DSNs to alice", func() bool { return len(a.mailbox("alice")) == 2 })
	dsns := strings.Join(rawMailbox(t, a, "alice"), "\n")
	for _, want := range []string{"Status: 5.1.10", "Status: 5.1.2", "null MX", "nosuch.mx.test: no such domain"} {
		if !strings.Contains(dsns, want) {
			t.Errorf("DSNs lack %q:\n%s", want, dsns)
		}
	}
	// Deferred, with the reason.
	deferred := map[string][]string{
		"servfail":      {"451 4.4.1", "SERVFAIL"},
		"sts-plain":     {"451 4.7.4", "MTA-STS enforce policy of sts.test", "does not offer STARTTLS"},
		"dane-bad":      {"451 4.7.5", "DANE policy of dane2.test", "no TLSA record"},
		"sts-unlisted":  {"451 4.7.5", "MTA-STS enforce policy of sts4.test", "MX host mx9.sts4.test is not listed"},
		"sts-badcert":   {"451 4.7.5", "MTA-STS enforce policy of sts5.test", "certificate is valid for"},
		"tlsa-servfail": {"451 4.7.5", "DANE policy of dane3.test", "TLSA lookup for mx.dane3.test failed", "SERVFAIL"},
	}
	waitFor(t, 20*time.Second, "six deferrals", func() bool {
		n := 0
		for _, m := range a.queued() {
			if m.Recipients[0].Status == spool.StatusDeferred {
				n++
			}
		}
		return n == len(deferred)
	})
	for subject, wants := range deferred {
		m, err := a.r.Spool().Get(ids[subject])
		if err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		r := m.Recipients[0]
		for _, w := range wants {
			if r.Status != spool.StatusDeferred || !strings.Contains(r.LastReply, w) {
				t.Errorf("%s: %s, last reply %q; want deferred with %q", subject, r.Status, r.LastReply, w)
			}
		}
	}
	for _, s := range append(plain.mailbox("bob"), secure.mailbox("bob")...) {
		if deferred[s] != nil {
			t.Errorf("%s was delivered although its policy forbids it", s)
		}
	}
	// Which policy applied is in the history `relay queue show` prints.
	waitFor(t, 20*time.Second, "sts-testing delivered in plaintext", func() bool { return countCopies(plain.mailbox("bob"))["sts-testing"] == 1 })
	for subject, want := range map[string]string{"dane-ok": "(policy DANE)", "sts-tls": "(policy MTA-STS enforce)", "mx-failover": "(policy none)", "sts-testing": "(policy MTA-STS testing)"} {
		h, err := a.r.Spool().History(ids[subject])
		if err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		found := false
		for _, e := range h.Events {
			found = found || strings.Contains(e.Text, want)
		}
		if !found {
			t.Errorf("%s: no event says %q: %+v", subject, want, h.Events)
		}
	}
	if fetches.Load() == 0 {
		t.Error("the MTA-STS policy was never fetched")
	}

	// TLS reports: the relay mails them to the rua of sts.test, dane.test
	// and dane2.test (bob@a.test, its own mailbox) after the interval.
	waitFor(t, 30*time.Second, "three TLS reports for bob@a.test", func() bool { return len(a.mailbox("bob")) >= 3 })
	reports := map[string]tlsrpt.Report{}
	for _, raw := range rawMailbox(t, a, "bob") {
		rep, domain := parseTLSReport(t, raw)
		reports[domain] = rep
	}
	check := func(domain string, typ tlsrpt.PolicyType, success, failure int64, result string) {
		t.Helper()
		rep, ok := reports[domain]
		if !ok {
			t.Errorf("no report for %s", domain)
			return
		}
		if rep.OrganizationName != "a.test" || len(rep.Policies) != 1 {
			t.Errorf("%s: report %+v", domain, rep)
			return
		}
		p := rep.Policies[0]
		if p.Policy.Type != typ || p.Policy.Domain != domain || p.Summary.Success != success || p.Summary.Failure != failure {
			t.Errorf("%s: policy %+v summary %+v", domain, p.Policy, p.Summary)
		}
		if result != "" && (len(p.FailureDetails) != 1 || p.FailureDetails[0].ResultType != result || p.FailureDetails[0].Count != failure) {
			t.Errorf("%s: failure details %+v, want one %s", domain, p.FailureDetails, result)
		}
	}
	check("sts.test", tlsrpt.PolicySTS, 0, 1, tlsrpt.StartTLSNotSupported)
	check("dane.test", tlsrpt.PolicyTLSA, 1, 0, "")
	check("dane2.test", tlsrpt.PolicyTLSA, 0, 1, tlsrpt.ValidationFailure)
	if p := reports["dane.test"].Policies; len(p) == 1 && (len(p[0].Policy.Strings) != 1 || !strings.HasPrefix(p[0].Policy.Strings[0], "3 1 1 ")) {
		t.Errorf("dane.test policy strings %q", p[0].Policy.Strings)
	}
}

func atoi(t *testing.T, s string) int {
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// rawMailbox returns the messages in user's mailbox.
func rawMailbox(t *testing.T, n *node, user string) []string {
	t.Helper()
	return spoolMailbox(t, n.r.Spool(), user)
}

// spoolMailbox returns the messages in user's mailbox of sp.
func spoolMailbox(t *testing.T, sp *spool.Spool, user string) []string {
	t.Helper()
	entries, err := sp.Mailbox(user)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		b, err := sp.MailboxMessage(user, e.Seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// parseTLSReport reads a report mail as a receiver of RFC 8460 reports
// would: multipart/report; report-type=tlsrpt, the application/tlsrpt+gzip
// part gunzipped and decoded as the RFC's JSON.
func parseTLSReport(t *testing.T, raw string) (tlsrpt.Report, string) {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("report content type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	domain := msg.Header.Get("TLS-Report-Domain")
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err != nil {
			t.Fatalf("report for %s has no application/tlsrpt+gzip part: %v", domain, err)
		}
		if part.Header.Get("Content-Type") != "application/tlsrpt+gzip" {
			continue
		}
		if !strings.HasSuffix(part.FileName(), ".json.gz") || !strings.Contains(part.FileName(), "!"+domain+"!") {
			t.Errorf("report file name %q", part.FileName())
		}
		zr, err := gzip.NewReader(decodeBase64(t, part))
		if err != nil {
			t.Fatal(err)
		}
		var rep tlsrpt.Report
		dec := json.NewDecoder(zr)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rep); err != nil {
			t.Fatalf("report JSON: %v", err)
		}
		return rep, domain
	}
}

func decodeBase64(t *testing.T, r io.Reader) io.Reader {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(b))
	n, err := base64.StdEncoding.Decode(out, bytes.Join(bytes.Fields(b), nil))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(out[:n])
}
