package dkim

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const testMsg = "From: Sender <sender@a.test>\r\n" +
	"To: alice@c.test\r\n" +
	"Subject: hello\r\n" +
	"Date: Sat, 21 Nov 2026 09:00:00 +0000\r\n" +
	"Message-ID: <1@a.test>\r\n" +
	"X-Unsigned: anything\r\n" +
	"\r\n" +
	"body line one\r\n" +
	"body line two\r\n"

// testKeys holds one key per algorithm; RSA generation is slow, so the
// keys are shared by the tests of this file.
var testKeys = map[Algorithm]crypto.Signer{}

func key(t *testing.T, alg Algorithm) crypto.Signer {
	t.Helper()
	if k, ok := testKeys[alg]; ok {
		return k
	}
	k, err := GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	testKeys[alg] = k
	return k
}

// setup returns a signer for a.test with selector s1 and a verifier that
// knows its key from the static table.
func setup(t *testing.T, alg Algorithm) (*Signer, *Verifier) {
	t.Helper()
	k := key(t, alg)
	rec, err := TXTValue(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &Signer{Domain: "a.test", Keys: []Key{{Selector: "s1", Signer: k}}},
		&Verifier{Keys: map[string]string{"s1._domainkey.a.test": rec}, Resolver: noDNS{}}
}

// noDNS is a resolver for tests that must not reach DNS: every name is
// unknown.
type noDNS struct{}

func (noDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// fakeDNS answers from a table, or with err.
type fakeDNS struct {
	records map[string][]string
	err     error
	asked   []string
}

func (f *fakeDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	f.asked = append(f.asked, name)
	if f.err != nil {
		return nil, f.err
	}
	if r, ok := f.records[name]; ok {
		return r, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func verifyOne(t *testing.T, v *Verifier, msg []byte) Result {
	t.Helper()
	res, err := v.Verify(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 {
		t.Fatalf("got %d results, want 1: %+v", len(res), res)
	}
	return res[0]
}

func sign(t *testing.T, s *Signer, msg string) []byte {
	t.Helper()
	signed, err := s.Sign([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func TestSignVerifyRoundTrip(t *testing.T) {
	for _, alg := range []Algorithm{Ed25519, RSA} {
		t.Run(string(alg), func(t *testing.T) {
			s, v := setup(t, alg)
			signed := sign(t, s, testMsg)
			if !strings.HasPrefix(string(signed), "DKIM-Signature: ") || !strings.HasSuffix(string(signed), testMsg) {
				t.Fatalf("signed message is not signature + message:\n%s", signed)
			}
			tags := parseTags(field{raw: signed[:len(signed)-len(testMsg)]}.value())
			if tags["c"] != "relaxed/relaxed" || tags["d"] != "a.test" || tags["s"] != "s1" || tags["a"] != string(alg)+"-sha256" {
				t.Errorf("signature tags = %v", tags)
			}
			// The recommended fields the message has, From once more; not
			// X-Unsigned.
			if want := "from:to:subject:date:message-id:from"; strings.ToLower(tags["h"]) != want {
				t.Errorf("h=%s, want %s", tags["h"], want)
			}
			if _, ok := tags["x"]; ok {
				t.Error("signature expires though no expiration was asked for")
			}
			r := verifyOne(t, v, signed)
			want := Result{Status: Pass, Domain: "a.test", Selector: "s1", Algorithm: string(alg) + "-sha256", SignaturePrefix: tags["b"][:8]}
			if r != want {
				t.Errorf("result = %+v, want %+v", r, want)
			}
		})
	}
}

// TestChangesThatKeepOrBreakSignatures: what a relay may do to a signed
// message (add trace fields, refold whitespace) keeps it valid; what
// changes what the reader sees breaks it.
func TestChangesThatKeepOrBreakSignatures(t *testing.T) {
	s, v := setup(t, Ed25519)
	signed := string(sign(t, s, testMsg))
	for _, c := range []struct {
		name   string
		change func(string) string
		want   Status
		reason string
	}{
		{"received header prepended", func(m string) string {
			return "Received: from a.test by b.test; Sat, 21 Nov 2026 09:00:01 +0000\r\n" + m
		}, Pass, ""},
		{"unsigned field changed", func(m string) string { return strings.Replace(m, "X-Unsigned: anything", "X-Unsigned: other", 1) }, Pass, ""},
		{"header whitespace refolded", func(m string) string { return strings.Replace(m, "Subject: hello", "Subject:\r\n\thello ", 1) }, Pass, ""},
		{"trailing whitespace in body", func(m string) string { return strings.Replace(m, "body line one\r\n", "body line one  \r\n", 1) }, Pass, ""},
		{"body byte changed", func(m string) string { return strings.Replace(m, "body line two", "body line 2wo", 1) }, Fail, "body hash did not verify"},
		{"body line added", func(m string) string { return m + "P.S. buy now\r\n" }, Fail, "body hash did not verify"},
		{"subject changed", func(m string) string { return strings.Replace(m, "Subject: hello", "Subject: jello", 1) }, Fail, "signature did not verify"},
		// Many readers show the first From; without oversigning, a From
		// added on top would pass, as the verifier takes the last one.
		{"second From added on top", func(m string) string { return "From: boss@a.test\r\n" + m }, Fail, "signature did not verify"},
		{"Cc added", func(m string) string { return strings.Replace(m, "X-Unsigned:", "Cc: x@evil.test\r\nX-Unsigned:", 1) }, Pass, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg := c.change(signed)
			if msg == signed {
				t.Fatal("the change changed nothing")
			}
			r := verifyOne(t, v, []byte(msg))
			if r.Status != c.want || !strings.Contains(r.Reason, c.reason) || strings.Contains(r.Reason, "dkim:") {
				t.Errorf("status %s (%s), want %s (%s)", r.Status, r.Reason, c.want, c.reason)
			}
		})
	}
}

func TestMissingKeyIsPermError(t *testing.T) {
	s, _ := setup(t, Ed25519)
	signed := sign(t, s, testMsg)
	dns := &fakeDNS{}
	r := verifyOne(t, &Verifier{Resolver: dns}, signed)
	if r.Status != PermError || !strings.Contains(r.Reason, "no key record at s1._domainkey.a.test") {
		t.Errorf("no key: %+v, want permerror", r)
	}
	if len(dns.asked) != 1 || dns.asked[0] != "s1._domainkey.a.test" {
		t.Errorf("DNS asked for %q", dns.asked)
	}
	// A revoked key (empty p=) is permerror too.
	r = verifyOne(t, &Verifier{Keys: map[string]string{"s1._domainkey.a.test": "v=DKIM1; k=ed25519; p="}}, signed)
	if r.Status != PermError || !strings.Contains(r.Reason, "revoked") {
		t.Errorf("revoked key: %+v, want permerror", r)
	}
	// Another key than the one that signed: the signature does not verify.
	other, _ := GenerateKey(Ed25519)
	rec, _ := TXTValue(other.Public())
	r = verifyOne(t, &Verifier{Keys: map[string]string{"s1._domainkey.a.test": rec}}, signed)
	if r.Status != Fail {
		t.Errorf("wrong key: %+v, want fail", r)
	}
}

func TestUnsignedIsNone(t *testing.T) {
	res, err := (&Verifier{Resolver: noDNS{}}).Verify(context.Background(), []byte(testMsg))
	if err != nil || len(res) != 0 {
		t.Fatalf("unsigned message: %v, %v; want no results", res, err)
	}
	if got, want := AuthenticationResults("c.test", res), "Authentication-Results: c.test; dkim=none\r\n"; got != want {
		t.Errorf("header = %q, want %q", got, want)
	}
}

// TestTemporaryDNSFailureIsTempError: a DNS outage must never make good
// mail look forged.
func TestTemporaryDNSFailureIsTempError(t *testing.T) {
	s, _ := setup(t, RSA)
	signed := sign(t, s, testMsg)
	for _, err := range []error{
		&net.DNSError{Err: "server misbehaving", Name: "s1._domainkey.a.test", IsTemporary: true},
		&net.DNSError{Err: "i/o timeout", Name: "s1._domainkey.a.test", IsTimeout: true},
		context.DeadlineExceeded,
		errors.New("resolver on fire"),
	} {
		r := verifyOne(t, &Verifier{Resolver: &fakeDNS{err: err}}, signed)
		if r.Status != TempError || !strings.Contains(r.Reason, "temporary DNS failure for s1._domainkey.a.test") {
			t.Errorf("lookup error %v: %+v, want temperror", err, r)
		}
	}
	// From DNS, once it answers, the key verifies.
	rec, _ := TXTValue(key(t, RSA).Public())
	r := verifyOne(t, &Verifier{Resolver: &fakeDNS{records: map[string][]string{"s1._domainkey.a.test": {rec}}}}, signed)
	if r.Status != Pass {
		t.Errorf("key from DNS: %+v, want pass", r)
	}
}

// TestStaticKeysBeforeDNS: a key in the static table is used without a
// DNS query, whatever DNS would say.
func TestStaticKeysBeforeDNS(t *testing.T) {
	s, v := setup(t, Ed25519)
	dns := &fakeDNS{err: errors.New("must not be asked")}
	v.Resolver = dns
	if r := verifyOne(t, v, sign(t, s, testMsg)); r.Status != Pass || len(dns.asked) != 0 {
		t.Errorf("result %+v, DNS asked %q", r, dns.asked)
	}
}

func TestExpiration(t *testing.T) {
	s, v := setup(t, Ed25519)
	s.Expiration = time.Hour
	signed := sign(t, s, testMsg)
	tags := parseTags(field{raw: signed[:len(signed)-len(testMsg)]}.value())
	if tags["x"] == "" || tags["x"] <= tags["t"] {
		t.Errorf("t=%s x=%s: want an expiration after the signing time", tags["t"], tags["x"])
	}
	if r := verifyOne(t, v, signed); r.Status != Pass {
		t.Errorf("unexpired signature: %+v", r)
	}
	// Signed "two hours ago" with one hour of validity: expired now.
	s.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	if r := verifyOne(t, v, sign(t, s, testMsg)); r.Status != PermError || !strings.Contains(r.Reason, "expired") {
		t.Errorf("expired signature: %+v, want permerror", r)
	}
}

// TestSeveralKeys: one signature per key, each verified on its own.
func TestSeveralKeys(t *testing.T) {
	ed, rs := key(t, Ed25519), key(t, RSA)
	s := &Signer{Domain: "a.test", Keys: []Key{{"ed", ed}, {"rs", rs}}}
	signed := sign(t, s, testMsg)
	edRec, _ := TXTValue(ed.Public())
	res, err := (&Verifier{Keys: map[string]string{"ed._domainkey.a.test": edRec}, Resolver: noDNS{}}).Verify(context.Background(), signed)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Selector != "ed" || res[0].Status != Pass || res[1].Selector != "rs" || res[1].Status != PermError {
		t.Errorf("results = %+v; want ed pass, rs permerror (no key)", res)
	}
	hdr := AuthenticationResults("c.test", res)
	if !regexp.MustCompile(`^Authentication-Results: c\.test;\r\n\tdkim=pass header\.d=a\.test header\.s=ed header\.a=ed25519-sha256 header\.b="?[^ ]{8}"?;\r\n\tdkim=permerror reason="no key for signature: no key record at rs\._domainkey\.a\.test" header\.d=a\.test header\.s=rs header\.a=rsa-sha256 header\.b="?[^ ]{8}"?\r\n$`).MatchString(hdr) {
		t.Errorf("header:\n%s", hdr)
	}
}

// TestTooManySignatures: only the first few are checked.
func TestTooManySignatures(t *testing.T) {
	s, v := setup(t, Ed25519)
	msg := []byte(testMsg)
	for i := 0; i < 8; i++ {
		msg = sign(t, s, string(msg))
	}
	v.MaxSignatures = 3
	res, err := v.Verify(context.Background(), msg)
	if err != nil || len(res) != 3 {
		t.Fatalf("got %d results, %v; want 3", len(res), err)
	}
}

func TestMessageWithoutBody(t *testing.T) {
	s, v := setup(t, Ed25519)
	msg := "From: sender@a.test\r\nSubject: no body\r\n"
	if r := verifyOne(t, v, sign(t, s, msg)); r.Status != Pass {
		t.Errorf("%+v", r)
	}
}

func TestAuthenticationResultsQuotesHostileValues(t *testing.T) {
	r := Result{Status: Fail, Domain: "a.test; dkim=pass", Selector: "s1\r\nX-Evil: 1", Reason: "bad \"sig\"\r\n", Algorithm: "rsa-sha256", SignaturePrefix: "ab/cd+ef"}
	got := AuthenticationResults("c.test", []Result{r})
	want := "Authentication-Results: c.test;\r\n\tdkim=fail reason=\"bad \\\"sig\\\"??\" header.d=\"a.test; dkim=pass\" header.s=\"s1??X-Evil: 1\" header.a=rsa-sha256 header.b=\"ab/cd+ef\"\r\n"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestRemoveAuthResults(t *testing.T) {
	msg := "Authentication-Results: c.test; dkim=pass header.d=bank.test\r\n" +
		"Received: from x by y; Sat, 21 Nov 2026 09:00:00 +0000\r\n" +
		"authentication-results: (forged) C.TEST;\r\n\tdkim=pass\r\n" +
		"Authentication-Results: \"c.test\"; spf=pass\r\n" +
		"Authentication-Results: b.test; dkim=pass header.d=a.test\r\n" +
		"Authentication-Results: c.test.evil.test; dkim=pass\r\n" +
		"Subject: x\r\n" +
		"\r\n" +
		"Authentication-Results: c.test; dkim=pass (in the body: text)\r\n"
	got, n := RemoveAuthResults([]byte(msg), "c.test")
	want := "Received: from x by y; Sat, 21 Nov 2026 09:00:00 +0000\r\n" +
		"Authentication-Results: b.test; dkim=pass header.d=a.test\r\n" +
		"Authentication-Results: c.test.evil.test; dkim=pass\r\n" +
		"Subject: x\r\n" +
		"\r\n" +
		"Authentication-Results: c.test; dkim=pass (in the body: text)\r\n"
	if n != 3 || string(got) != want {
		t.Errorf("removed %d, got:\n%s\nwant 3:\n%s", n, got, want)
	}
	if same, n := RemoveAuthResults([]byte(want), "c.test"); n != 0 || string(same) != want {
		t.Errorf("second pass removed %d", n)
	}
}

func TestFromDomain(t *testing.T) {
	for _, c := range []struct{ msg, want, err string }{
		{"From: Sender <sender@A.Test>\r\n\r\n", "a.test", ""},
		{"from: sender@a.test.\r\nSubject: x\r\n\r\nFrom: body@b.test\r\n", "a.test", ""},
		{"From: =?x-unknown?q?S=E9bastien?= <s@a.test>\r\n\r\n", "a.test", ""},
		{"From: \"Last, First\"\r\n <f@a.test>, other@A.TEST\r\n\r\n", "a.test", ""},
		{"From: broken <<s@a.test>\r\n\r\n", "a.test", ""},
		{"Subject: x\r\n\r\n", "", "no From"},
		{"From: a@a.test\r\nFrom: b@b.test\r\n\r\n", "", "2 From"},
		{"From: a@a.test, b@b.test\r\n\r\n", "", "authors in a.test and b.test"},
		{"From: nobody\r\n\r\n", "", "no domain"},
	} {
		got, err := FromDomain([]byte(c.msg))
		if got != c.want || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("FromDomain(%q) = %q, %v; want %q, %q", c.msg, got, err, c.want, c.err)
		}
	}
}

func TestTXTRecord(t *testing.T) {
	for _, alg := range []Algorithm{Ed25519, RSA} {
		k := key(t, alg)
		rec, err := TXTRecord("S1", "A.test", k.Public())
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`^s1\._domainkey\.a\.test IN TXT ((?:"[^"]*" ?)+)$`).FindStringSubmatch(rec)
		if m == nil {
			t.Fatalf("%s record: %s", alg, rec)
		}
		var joined string
		strs := regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(m[1], -1)
		for _, s := range strs {
			if len(s[1]) > 255 {
				t.Errorf("%s: string of %d bytes", alg, len(s[1]))
			}
			joined += s[1]
		}
		value, _ := TXTValue(k.Public())
		if joined != value || !strings.HasPrefix(value, "v=DKIM1; k="+string(alg)+"; p=") {
			t.Errorf("%s: record strings join to %q, want %q", alg, joined, value)
		}
		if wantStrings := map[Algorithm]int{Ed25519: 1, RSA: 2}[alg]; len(strs) != wantStrings {
			t.Errorf("%s: %d strings, want %d", alg, len(strs), wantStrings)
		}
		if !MatchesRecord(strings.Replace(value, "p=", "p= ", 1), k.Public()) {
			t.Errorf("%s: MatchesRecord false for its own record", alg)
		}
		other, _ := GenerateKey(Ed25519)
		if MatchesRecord(value, other.Public()) {
			t.Errorf("%s: MatchesRecord true for another key", alg)
		}
	}
	for _, bad := range [][2]string{{"s 1", "a.test"}, {"s1", "a.test\" IN TXT \"x"}, {"", "a.test"}, {"s1", "a..test"}, {"s1;", "a.test"}} {
		if rec, err := TXTRecord(bad[0], bad[1], key(t, Ed25519).Public()); err == nil {
			t.Errorf("TXTRecord(%q, %q) = %s, want an error", bad[0], bad[1], rec)
		}
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	for _, alg := range []Algorithm{Ed25519, RSA} {
		path := filepath.Join(dir, string(alg)+".pem")
		k := key(t, alg)
		if err := WriteKey(path, k); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", path, fi.Mode(), err)
		}
		back, err := LoadKey(path)
		if err != nil {
			t.Fatal(err)
		}
		if a, _ := TXTValue(back.Public()); !MatchesRecord(a, k.Public()) {
			t.Errorf("%s: loaded key differs from the written one", alg)
		}
		if err := WriteKey(path, k); err == nil || !strings.Contains(err.Error(), "exists") {
			t.Errorf("overwriting a key file: %v, want an error", err)
		}
	}

	// PKCS#1 RSA (openssl genrsa, opendkim-genkey) loads too.
	pkcs1 := filepath.Join(dir, "pkcs1.pem")
	der := x509.MarshalPKCS1PrivateKey(key(t, RSA).(*rsa.PrivateKey))
	os.WriteFile(pkcs1, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), 0o600)
	if _, err := LoadKey(pkcs1); err != nil {
		t.Errorf("PKCS#1 key: %v", err)
	}

	short, _ := rsa.GenerateKey(rand.Reader, 1024)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	shortDER, _ := x509.MarshalPKCS8PrivateKey(short)
	for name, c := range map[string]struct {
		data []byte
		err  string
	}{
		"short.pem":   {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: shortDER}), "rsa key of 1024 bits is too short"},
		"ec.pem":      {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}), "unsupported key type"},
		"garbage.pem": {[]byte("not a key\n"), "no PEM block"},
		"cert.pem":    {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), `"CERTIFICATE" is not a private key`},
	} {
		path := filepath.Join(dir, name)
		os.WriteFile(path, c.data, 0o600)
		_, err := LoadKey(path)
		if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v; want an error naming the file and %q", name, err, c.err)
		}
	}
	if _, err := LoadKey(filepath.Join(dir, "missing.pem")); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := GenerateKey("dsa"); err == nil {
		t.Error("GenerateKey(dsa) succeeded")
	}
}

func TestSignedBy(t *testing.T) {
	s, _ := setup(t, Ed25519)
	signed := sign(t, s, testMsg)
	if !SignedBy(signed, "A.test.") || SignedBy(signed, "b.test") || SignedBy([]byte(testMsg), "a.test") {
		t.Error("SignedBy does not tell a.test's signature")
	}
}
