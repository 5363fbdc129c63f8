package dane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func cert(t *testing.T, name string, ca bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, notAfter time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter,
		IsCA: ca, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if !ca {
		tmpl.DNSNames = []string{name}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func tlsa(usage, sel, match uint8, data []byte) *dns.TLSA {
	return &dns.TLSA{Usage: usage, Selector: sel, MatchingType: match, Certificate: hex.EncodeToString(data)}
}

func TestVerify(t *testing.T) {
	soon := time.Now().Add(time.Hour)
	ca, caKey := cert(t, "test TA", true, nil, nil, soon)
	leaf, _ := cert(t, "mx.dane.test", false, ca, caKey, soon)
	expired, _ := cert(t, "mx.dane.test", false, ca, caKey, time.Now().Add(-time.Hour))
	chain := []*x509.Certificate{leaf, ca}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	full := sha512.Sum512(leaf.Raw)
	caSPKI := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	other := sha256.Sum256([]byte("x"))

	cases := []struct {
		name  string
		chain []*x509.Certificate
		rrs   []*dns.TLSA
		names []string
		ok    bool
	}{
		{"EE SPKI sha256", chain, []*dns.TLSA{tlsa(3, 1, 1, spki[:])}, []string{"anything.test"}, true},
		{"EE cert sha512", chain, []*dns.TLSA{tlsa(3, 0, 2, full[:])}, nil, true},
		{"EE full cert", chain, []*dns.TLSA{tlsa(3, 0, 0, leaf.Raw)}, nil, true},
		{"EE mismatch", chain, []*dns.TLSA{tlsa(3, 1, 1, other[:])}, nil, false},
		{"EE one of two", chain, []*dns.TLSA{tlsa(3, 1, 1, other[:]), tlsa(3, 1, 1, spki[:])}, nil, true},
		{"TA", chain, []*dns.TLSA{tlsa(2, 1, 1, caSPKI[:])}, []string{"mx.dane.test"}, true},
		{"TA wrong name", chain, []*dns.TLSA{tlsa(2, 1, 1, caSPKI[:])}, []string{"mx.other.test"}, false},
		{"TA not in chain", []*x509.Certificate{leaf}, []*dns.TLSA{tlsa(2, 1, 1, caSPKI[:])}, []string{"mx.dane.test"}, false},
		{"TA expired leaf", []*x509.Certificate{expired, ca}, []*dns.TLSA{tlsa(2, 1, 1, caSPKI[:])}, []string{"mx.dane.test"}, false},
		{"EE ignores expiry", []*x509.Certificate{expired, ca}, []*dns.TLSA{tlsa(3, 0, 0, expired.Raw)}, nil, true},
		{"PKIX-EE unusable", chain, []*dns.TLSA{tlsa(1, 1, 1, spki[:])}, nil, false},
		{"bad digest length", chain, []*dns.TLSA{tlsa(3, 1, 1, spki[:20])}, nil, false},
		{"no certificate", nil, []*dns.TLSA{tlsa(3, 1, 1, spki[:])}, nil, false},
	}
	for _, c := range cases {
		err := Verify(c.chain, Usable(c.rrs), c.names)
		if (err == nil) != c.ok {
			t.Errorf("%s: Verify = %v, want ok %v", c.name, err, c.ok)
		}
	}
	if r := Usable([]*dns.TLSA{tlsa(3, 1, 1, spki[:])})[0].String(); r != "3 1 1 "+hex.EncodeToString(spki[:]) {
		t.Errorf("String() = %q", r)
	}
}
