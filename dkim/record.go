package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
)

// maxTXTString is the longest character-string a DNS TXT record can hold
// (RFC 1035 §3.3); longer values are split over several strings, which
// resolvers join back together (RFC 6376 §3.6.2.2).
const maxTXTString = 255

// TXTValue is the key record for pub as published in DNS and as written in
// [dkim.keys]: "v=DKIM1; k=ed25519; p=…" with the raw 32-byte key (RFC
// 8463 §4.2), or "v=DKIM1; k=rsa; p=…" with the SubjectPublicKeyInfo DER,
// the form openssl and opendkim-genkey publish.
func TXTValue(pub crypto.PublicKey) (string, error) {
	var alg Algorithm
	var raw []byte
	switch k := pub.(type) {
	case ed25519.PublicKey:
		alg, raw = Ed25519, k
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return "", fmt.Errorf("dkim: encode public key: %w", err)
		}
		alg, raw = RSA, der
	default:
		return "", fmt.Errorf("dkim: unsupported public key type %T", pub)
	}
	return "v=DKIM1; k=" + string(alg) + "; p=" + base64.StdEncoding.EncodeToString(raw), nil
}

// RecordName is the DNS name of a key: "<selector>._domainkey.<domain>".
func RecordName(selector, domain string) string {
	return strings.ToLower(strings.TrimSuffix(selector, ".") + "._domainkey." + strings.TrimSuffix(domain, "."))
}

// TXTRecord is the DNS resource record that publishes pub for selector
// and domain, in zone-file syntax:
//
//	s1._domainkey.a.test IN TXT "v=DKIM1; k=ed25519; p=…"
//
// A value longer than 255 bytes (any RSA key) is split into several
// quoted strings of one record, which DNS joins without separators.
func TXTRecord(selector, domain string, pub crypto.PublicKey) (string, error) {
	if !validName(selector) {
		return "", fmt.Errorf("dkim: invalid selector %q (want DNS labels: letters, digits, '-', '_')", selector)
	}
	if !validName(domain) {
		return "", fmt.Errorf("dkim: invalid domain %q", domain)
	}
	v, err := TXTValue(pub)
	if err != nil {
		return "", err
	}
	var quoted []string
	for len(v) > maxTXTString {
		quoted = append(quoted, `"`+v[:maxTXTString]+`"`)
		v = v[maxTXTString:]
	}
	quoted = append(quoted, `"`+v+`"`)
	return RecordName(selector, domain) + " IN TXT " + strings.Join(quoted, " "), nil
}

// MatchesRecord reports whether the key record value (the text of a TXT
// record, strings joined) publishes pub. The relay uses it to warn when
// its own [dkim.keys] entry disagrees with the key it signs with.
func MatchesRecord(record string, pub crypto.PublicKey) bool {
	want, err := TXTValue(pub)
	if err != nil {
		return false
	}
	return recordP(record) == recordP(want) && recordP(want) != ""
}

// recordP extracts the p= tag of a key record, whitespace removed (RFC
// 6376 §3.6.1 allows folding whitespace inside it).
func recordP(record string) string {
	for _, tag := range strings.Split(record, ";") {
		name, value, ok := strings.Cut(tag, "=")
		if ok && strings.TrimSpace(name) == "p" {
			return strings.Join(strings.Fields(value), "")
		}
	}
	return ""
}

// validName reports whether s is a DNS name of ASCII labels (letters,
// digits, '-', '_'; 1 to 63 bytes each), with or without the final dot:
// what a selector or a signing domain can be, and nothing that could
// break out of a zone-file line.
func validName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range []byte(label) {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return false
			}
		}
	}
	return true
}
