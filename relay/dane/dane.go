// Package dane implements DANE for SMTP (RFC 7672) on the sending side:
// which TLSA records of an MX host are usable, and whether the certificate
// chain a server presented matches them.
//
// DNSSEC is the resolver's job: the caller looks TLSA records up only for
// an MX host whose MX answer was validated, and uses them only when their
// own answer was (the AD bit of a validating resolver on loopback).
package dane

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// The TLSA fields that SMTP uses (RFC 7672 §3.1, RFC 7218 names).
const (
	UsageDANETA  = 2 // DANE-TA: a trust anchor in the chain the server presents
	UsageDANEEE  = 3 // DANE-EE: the server's own certificate or key
	SelectorCert = 0
	SelectorSPKI = 1
	MatchFull    = 0
	MatchSHA256  = 1
	MatchSHA512  = 2
)

// Record is one usable TLSA record.
type Record struct {
	Usage, Selector, MatchingType uint8
	Data                          []byte
}

// String is the record's presentation form, "3 1 1 <hex>", as TLS-RPT's
// policy-string wants it.
func (r Record) String() string {
	return strconv.Itoa(int(r.Usage)) + " " + strconv.Itoa(int(r.Selector)) + " " + strconv.Itoa(int(r.MatchingType)) + " " + hex.EncodeToString(r.Data)
}

// Usable returns the records an SMTP client can use: usages DANE-TA and
// DANE-EE (PKIX-TA and PKIX-EE are not used with SMTP, RFC 7672 §3.1.3),
// known selectors and matching types, and digests of the right length.
// A host whose records are all unusable gets no DANE, but TLS is still
// mandatory for it (RFC 7672 §2.2).
func Usable(rrs []*dns.TLSA) []Record {
	var out []Record
	for _, rr := range rrs {
		if rr.Usage != UsageDANETA && rr.Usage != UsageDANEEE {
			continue
		}
		if rr.Selector != SelectorCert && rr.Selector != SelectorSPKI {
			continue
		}
		data, err := hex.DecodeString(rr.Certificate)
		if err != nil {
			continue
		}
		switch rr.MatchingType {
		case MatchFull:
		case MatchSHA256:
			if len(data) != sha256.Size {
				continue
			}
		case MatchSHA512:
			if len(data) != sha512.Size {
				continue
			}
		default:
			continue
		}
		out = append(out, Record{Usage: rr.Usage, Selector: rr.Selector, MatchingType: rr.MatchingType, Data: data})
	}
	return out
}

// matches reports whether cert matches r's selector and matching type.
func (r Record) matches(cert *x509.Certificate) bool {
	var b []byte
	switch r.Selector {
	case SelectorCert:
		b = cert.Raw
	case SelectorSPKI:
		b = cert.RawSubjectPublicKeyInfo
	default:
		return false
	}
	switch r.MatchingType {
	case MatchSHA256:
		h := sha256.Sum256(b)
		b = h[:]
	case MatchSHA512:
		h := sha512.Sum512(b)
		b = h[:]
	case MatchFull:
	default:
		return false
	}
	return bytes.Equal(b, r.Data)
}

// Verify checks the chain a server presented (leaf first) against the
// usable records of its host. A DANE-EE record matches the leaf alone:
// names and dates are not checked (RFC 7672 §3.1.1). A DANE-TA record
// matches a certificate of the chain, which must then issue the leaf
// through the rest of the chain, for one of names (the MX host name;
// RFC 7672 §3.2.2), within its validity.
func Verify(chain []*x509.Certificate, recs []Record, names []string) error {
	if len(chain) == 0 {
		return errors.New("DANE: the server presented no certificate")
	}
	leaf := chain[0]
	var taErr error
	for _, r := range recs {
		switch r.Usage {
		case UsageDANEEE:
			if r.matches(leaf) {
				return nil
			}
		case UsageDANETA:
			for _, ca := range chain {
				if !r.matches(ca) {
					continue
				}
				if err := verifyTA(chain, ca, names); err != nil {
					taErr = err
					continue
				}
				return nil
			}
		}
	}
	if taErr != nil {
		return fmt.Errorf("DANE: the chain holds the trust anchor of a TLSA record, but %w", taErr)
	}
	return fmt.Errorf("DANE: no TLSA record (%s) matches the certificate chain presented (%s)", describe(recs), subject(leaf))
}

func verifyTA(chain []*x509.Certificate, anchor *x509.Certificate, names []string) error {
	roots := x509.NewCertPool()
	roots.AddCert(anchor)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	var err error
	for _, n := range names {
		_, err = chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: strings.TrimSuffix(n, ".")})
		if err == nil {
			return nil
		}
	}
	if err == nil {
		err = errors.New("no name to check")
	}
	return err
}

func describe(recs []Record) string {
	var s []string
	for _, r := range recs {
		t := r.String()
		if len(t) > 24 {
			t = t[:24] + "…"
		}
		s = append(s, t)
	}
	return strings.Join(s, ", ")
}

func subject(c *x509.Certificate) string {
	h := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "leaf " + c.Subject.String() + ", SPKI sha256 " + hex.EncodeToString(h[:])
}
