package dkim

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Sealer adds ARC sets (RFC 8617 §5.1) to messages for one domain (the
// d= of its seals). An ARC set has one message signature and one seal, so
// a Sealer has one key, and it must be RSA: ARC verifiers know
// rsa-sha256 only (dkimpy 1.1 fails a chain with an ed25519-sha256 seal
// as "unknown signature algorithm"), though VerifyARC accepts both.
//
// Set the fields before the first Seal and do not change them afterwards;
// Seal may then be called from many goroutines.
type Sealer struct {
	Domain string
	Key    Key
	// Now is the clock for the t= tags; nil: time.Now.
	Now func() time.Time
}

// Seal returns the ARC set that extends the chain of msg: see SealParts.
func (s *Sealer) Seal(msg []byte, chain ARCResult, authservID string, results []string) ([]byte, error) {
	header, rest := splitHeader(msg)
	return s.SealParts(header, func() (io.Reader, error) { return bytes.NewReader(rest), nil }, chain, authservID, results)
}

// SealParts returns the ARC set of instance chain.Instance+1 for a message
// given as its header section and a function returning a new reader of
// the rest, for the caller to put in front of the message: ARC-Seal,
// ARC-Message-Signature and ARC-Authentication-Results, each ending in
// CRLF.
//
// chain is what VerifyARC returned for this very message; the seal
// records its status as cv=. results are the resinfo texts this
// authentication service (authservID) found, as in its
// Authentication-Results field ("dkim=pass header.d=a.test", "arc=pass
// (i=1)"); the ARC-Authentication-Results field carries them on.
//
// The message signature is relaxed/relaxed over the body and the header
// fields a DKIM signature covers (never ARC fields or trace fields), with
// From signed once more than it occurs. The seal covers every earlier set
// in order and the new one; when the chain failed (cv=fail) it covers the
// new set only, as there is no chain left to vouch for (what dkimpy
// does). SealParts returns nil and no error when RFC 8617 forbids adding
// a set: the latest seal already says cv=fail, the chain has 50 sets, or
// ARC fields are there but none of them has a usable instance.
func (s *Sealer) SealParts(header []byte, body func() (io.Reader, error), chain ARCResult, authservID string, results []string) ([]byte, error) {
	if s.Domain == "" || s.Key.Selector == "" || s.Key.Signer == nil {
		return nil, errors.New("dkim: sealer without domain, selector or key")
	}
	if alg, err := KeyAlgorithm(s.Key.Signer); err != nil {
		return nil, err
	} else if alg != RSA {
		return nil, fmt.Errorf("dkim: ARC seals for %s need an rsa key, not %s", s.Domain, alg)
	}
	const alg = "rsa-sha256"
	var cv string
	switch chain.Status {
	case None:
		cv = "none"
	case Pass:
		cv = "pass"
	case Fail:
		cv = "fail"
	default:
		return nil, fmt.Errorf("dkim: cannot seal a chain whose status is %q", chain.Status)
	}
	if chain.closed || chain.Instance >= MaxARCInstance {
		return nil, nil
	}
	n := chain.Instance + 1
	fields, _ := headerFields(header)
	var previous [][]byte // the seal's earlier sets, oldest first
	if cv == "pass" {
		sets, m, bad := arcSets(fields)
		if bad.Status != "" || m != chain.Instance {
			return nil, errors.New("dkim: seal: the ARC chain is not the one verified")
		}
		for j := 1; j < n; j++ {
			previous = append(previous, sets[j].aar.raw, sets[j].ams.raw, sets[j].as.raw)
		}
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	t := strconv.FormatInt(now().Unix(), 10)
	i := strconv.Itoa(n)
	sign := func(kind string, signed [][]byte, head string) ([]byte, error) {
		sig, err := signDigest(s.Key.Signer, headerHash(signed, []byte(head), true))
		if err != nil {
			return nil, fmt.Errorf("dkim: %s for %s (selector %s): %w", kind, s.Domain, s.Key.Selector, err)
		}
		return []byte(head + foldB(base64.StdEncoding.EncodeToString(sig)) + "\r\n"), nil
	}

	var aar strings.Builder
	aar.WriteString(aarField + ": i=" + i + "; " + pvalue(authservID))
	if len(results) == 0 {
		aar.WriteString("; none")
	}
	for _, r := range results {
		aar.WriteString(";\r\n\t" + fold(r, maxLine-1))
	}
	aar.WriteString("\r\n")

	bh, err := bodyHash(body, true)
	if err != nil {
		return nil, fmt.Errorf("dkim: seal: %w", err)
	}
	keys := headerKeys(fields)
	ams, err := sign(amsField, selectFields(fields, keys),
		amsField+": i="+i+"; a="+alg+"; c=relaxed/relaxed; d="+s.Domain+";\r\n"+
			"\ts="+s.Key.Selector+"; t="+t+";\r\n"+
			"\th="+strings.Join(keys, ":")+";\r\n"+
			"\tbh="+base64.StdEncoding.EncodeToString(bh)+";\r\n\tb=")
	if err != nil {
		return nil, err
	}
	as, err := sign(asField, append(previous, []byte(aar.String()), ams),
		asField+": i="+i+"; a="+alg+"; t="+t+"; cv="+cv+";\r\n"+
			"\td="+s.Domain+"; s="+s.Key.Selector+";\r\n\tb=")
	if err != nil {
		return nil, err
	}
	out := append(as, ams...)
	return append(out, aar.String()...), nil
}

// foldB breaks a base64 signature into lines of 76 octets; the
// whitespace is part of b=, which verifiers remove with it.
func foldB(b string) string {
	var out strings.Builder
	for len(b) > 72 {
		out.WriteString(b[:72] + "\r\n\t")
		b = b[72:]
	}
	out.WriteString(b)
	return out.String()
}
