package dnscheck

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/dkim"
	"github.com/relay-mta/relay/internal/testca"
	"github.com/relay-mta/relay/relay/mtasts"
	"github.com/relay-mta/relay/relay/resolve"
	"github.com/relay-mta/relay/relay/resolve/dnstest"
)

// The checklist against unbound: a domain that publishes everything
// right (signed, so its TLSA records count), and one that gets each
// record wrong in a way an operator could.
func TestCheck(t *testing.T) {
	ca := testca.New(t)
	cert := ca.Issue(t, "mta-sts.good.test", "mta-sts.bad.test")
	l, err := tls.Listen("tcp", "127.0.26.6:0", &tls.Config{Certificates: []tls.Certificate{cert.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "version: STSv1\nmode: enforce\nmx: mx.good.test\nmax_age: 86400\n")
	})}
	go hs.Serve(l)
	defer hs.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())

	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	rec, _ := dkim.TXTValue(pub)
	wrong, _ := dkim.TXTValue(other)
	spki := sha256.Sum256([]byte("the MX's key"))
	tlsa := "_25._tcp.mx TLSA 3 1 1 " + hex.EncodeToString(spki[:])
	srv := dnstest.Start(t, "127.0.26.1",
		dnstest.Zone{Name: "good.test", Signed: true, Records: []string{
			"@ MX 10 mx", "mx A 127.0.26.6", `@ TXT "v=spf1 mx -all"`, `s1._domainkey TXT "` + rec + `"`,
			`_dmarc TXT "v=DMARC1; p=reject"`, `_mta-sts TXT "v=STSv1; id=1"`, "mta-sts A 127.0.26.6",
			`_smtp._tls TXT "v=TLSRPTv1; rua=mailto:tlsrpt@good.test"`, tlsa,
		}},
		dnstest.Zone{Name: "bad.test", Records: []string{
			"@ MX 10 mx", "mx A 127.0.26.6", `@ TXT "v=spf1 -all"`, `@ TXT "v=spf1 mx -all"`,
			`s1._domainkey TXT "` + wrong + `"`, `_mta-sts TXT "v=STSv1; id=1"`, "mta-sts A 127.0.26.6",
			`_smtp._tls TXT "v=TLSRPTv1; rua=https://r.bad.test/"`, tlsa,
		}},
		dnstest.Zone{Name: "bare.test", Records: []string{"@ A 127.0.26.6"}},
	)
	r, err := resolve.New(resolve.Options{Servers: []string{srv.Addr}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	o := Options{Resolver: r, STS: &mtasts.Source{Resolver: r, RootCAs: ca.Pool(), Port: p}, DKIM: []DKIMKey{{Selector: "s1", Public: pub}}}
	ctx := context.Background()

	want := func(domain string, o Options, wants map[string]Status, texts ...string) {
		t.Helper()
		items := Check(ctx, domain, o)
		got := map[string]Status{}
		var all strings.Builder
		for _, it := range items {
			got[it.Record] = it.Status
			fmt.Fprintf(&all, "%s %s %s\n", it.Record, it.Status, it.Text)
		}
		for rec, st := range wants {
			if got[rec] != st {
				t.Errorf("%s: %s is %q, want %q\n%s", domain, rec, got[rec], st, all.String())
			}
		}
		for _, s := range texts {
			if !strings.Contains(all.String(), s) {
				t.Errorf("%s: output lacks %q:\n%s", domain, s, all.String())
			}
		}
		failed := false
		for _, st := range wants {
			failed = failed || st == Fail || st == Missing
		}
		if Failed(items) != failed {
			t.Errorf("%s: Failed = %v", domain, !failed)
		}
	}
	want("good.test", o, map[string]Status{"MX": OK, "SPF": OK, "DKIM s1": OK, "DMARC": OK, "MTA-STS": OK, "TLS-RPT": OK, "DANE mx.good.test": OK},
		"DNSSEC-validated", "mode enforce", "tlsrpt@good.test", "3 1 1 ")
	want("bad.test", o, map[string]Status{"MX": OK, "SPF": Fail, "DKIM s1": Fail, "DMARC": Missing, "MTA-STS": Fail, "TLS-RPT": Fail, "DANE mx.bad.test": Fail},
		"not DNSSEC-validated", "2 v=spf1 records", "are not in its mx lines", "rua names no mailto", "DANE does not apply")
	o.DKIM = nil
	want("bare.test", o, map[string]Status{"MX": Missing, "SPF": Missing, "DKIM": Missing, "DMARC": Missing, "MTA-STS": None, "TLS-RPT": None},
		"relay dkim keygen --domain bare.test", `bare.test. TXT \"v=spf1 mx -all\"`)
}
