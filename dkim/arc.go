package dkim

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The header fields of an ARC set (RFC 8617 §4.1).
const (
	aarField = "ARC-Authentication-Results"
	amsField = "ARC-Message-Signature"
	asField  = "ARC-Seal"
)

// MaxARCInstance is the highest instance an ARC set may have (RFC 8617
// §4.2.1): a chain of that many sets cannot be extended.
const MaxARCInstance = 50

// ARCResult is the validation of a message's Authenticated Received
// Chain (RFC 8617 §5.2).
type ARCResult struct {
	// Status is None (no ARC header fields), Pass, Fail, or TempError (a
	// key could not be fetched now; the chain may pass later).
	Status Status
	// Instance is the highest instance of the chain, 0 when there is none.
	Instance int
	// Domain is the d= of the latest ARC-Seal: who vouches for the chain
	// as it arrived. Empty when the chain is malformed.
	Domain string
	// Reason says why the status is not pass or none.
	Reason string
	// closed: the chain must not be extended (RFC 8617 §5.1 step 1: its
	// latest seal says cv=fail; or it has MaxARCInstance sets).
	closed bool
}

// String renders r as an RFC 8601 resinfo, the verdict in an
// Authentication-Results field (RFC 8617 §10.2):
//
//	arc=pass (i=2 d=b.test)
//	arc=fail reason="ARC-Seal i=1 did not verify" (i=2 d=b.test)
func (r ARCResult) String() string {
	if r.Status == None || r.Status == "" {
		return "arc=none"
	}
	var b strings.Builder
	writeVerdict(&b, "arc", r.Status, r.Reason)
	if r.Instance > 0 {
		b.WriteString(" (i=" + strconv.Itoa(r.Instance))
		if r.Domain != "" && len(r.Domain) <= maxValue && pvalue(r.Domain) == r.Domain {
			b.WriteString(" d=" + r.Domain)
		}
		b.WriteString(")")
	}
	return b.String()
}

// arcSet is the header fields of one instance.
type arcSet struct {
	aar, ams, as *field
}

// arcFail is a chain that does not validate, for the reason given.
func arcFail(n int, format string, args ...any) ARCResult {
	return ARCResult{Status: Fail, Instance: n, Reason: fmt.Sprintf(format, args...)}
}

// VerifyARC validates the ARC chain of a message given as its header
// section and a function returning a new reader of the rest (as for
// VerifyParts), with keys from the same table and resolver as DKIM
// signatures. It follows RFC 8617 §5.2: every set 1..N present once and
// complete, N at most 50, cv=none on the first seal and cv=pass on the
// others, the latest ARC-Message-Signature valid over the message, every
// ARC-Seal valid over the sets up to its own. body is read only when the
// chain is well formed, and then once. The error is for a body that
// cannot be read.
func (v *Verifier) VerifyARC(ctx context.Context, header []byte, body func() (io.Reader, error)) (ARCResult, error) {
	fields, _ := headerFields(header)
	sets, n, res := arcSets(fields)
	if res.Status != "" {
		return res, nil
	}
	if n == 0 {
		return ARCResult{Status: None}, nil
	}
	seals := make([]map[string]string, n+1)
	for i := 1; i <= n; i++ {
		tags, err := strictTags(sets[i].as.value())
		if err != nil {
			return arcFail(n, "ARC-Seal i=%d: %v", i, err), nil
		}
		seals[i] = tags
	}
	res = ARCResult{Status: Pass, Instance: n, Domain: seals[n]["d"]}
	if n >= MaxARCInstance {
		res.closed = true
	}
	// RFC 8617 §5.2 step 3 and 4: the chain's own record of itself.
	for i := n; i >= 1; i-- {
		cv := strings.ToLower(seals[i]["cv"])
		want := "pass"
		if i == 1 {
			want = "none"
		}
		if cv == "fail" {
			res.Status, res.Reason, res.closed = Fail, fmt.Sprintf("ARC-Seal i=%d says cv=fail", i), i == n
			return res, nil
		}
		if cv != want {
			res.Status, res.Reason = Fail, fmt.Sprintf("ARC-Seal i=%d has cv=%.20q, want %s", i, cv, want)
			return res, nil
		}
	}
	// Step 5: the latest message signature.
	if st, reason, err := v.verifyAMS(ctx, fields, sets[n].ams, n, body); err != nil {
		return ARCResult{}, err
	} else if st != Pass {
		res.Status, res.Reason = st, "ARC-Message-Signature i="+strconv.Itoa(n)+": "+reason
		return res, nil
	}
	// Step 7: every seal, latest first.
	for i := n; i >= 1; i-- {
		signed := make([][]byte, 0, 3*i)
		for j := 1; j < i; j++ {
			signed = append(signed, sets[j].aar.raw, sets[j].ams.raw, sets[j].as.raw)
		}
		signed = append(signed, sets[i].aar.raw, sets[i].ams.raw)
		tags := seals[i]
		if _, ok := tags["h"]; ok {
			res.Status, res.Reason = Fail, fmt.Sprintf("ARC-Seal i=%d has an h= tag", i)
			return res, nil
		}
		if st, reason := v.checkSignature(ctx, tags, headerHash(signed, sets[i].as.raw, true)); st != Pass {
			res.Status, res.Reason = st, fmt.Sprintf("ARC-Seal i=%d: %s", i, reason)
			return res, nil
		}
	}
	return res, nil
}

// arcSets groups the ARC fields by instance and returns them with the
// highest instance; a chain whose shape is wrong (RFC 8617 §5.2 step 2:
// an instance missing, duplicated, out of range or incomplete) comes
// back as a Fail result instead.
func arcSets(fields []field) (map[int]*arcSet, int, ARCResult) {
	sets := map[int]*arcSet{}
	n := 0
	var shape string
	for i := range fields {
		f := &fields[i]
		var slot **field
		var inst string
		switch {
		case f.is(aarField):
			// "i=1; authserv-id; …": the instance tag first (§4.1.1).
			first, _, _ := strings.Cut(f.value(), ";")
			if name, value, ok := strings.Cut(first, "="); ok && strings.TrimSpace(name) == "i" {
				inst = strings.TrimSpace(value)
			}
		case f.is(amsField), f.is(asField):
			inst = parseTags(f.value())["i"]
		default:
			continue
		}
		k, err := strconv.Atoi(inst)
		if err != nil || k < 1 || inst[0] == '+' {
			if shape == "" {
				shape = fmt.Sprintf("%s with invalid instance %.20q", f.name, inst)
			}
			continue
		}
		n = max(n, k)
		if k > MaxARCInstance {
			if shape == "" {
				shape = fmt.Sprintf("%s i=%d exceeds %d", f.name, k, MaxARCInstance)
			}
			continue
		}
		s := sets[k]
		if s == nil {
			s = &arcSet{}
			sets[k] = s
		}
		switch {
		case f.is(aarField):
			slot = &s.aar
		case f.is(amsField):
			slot = &s.ams
		default:
			slot = &s.as
		}
		if *slot != nil && shape == "" {
			shape = fmt.Sprintf("two %s fields with i=%d", f.name, k)
		}
		*slot = f
	}
	if shape == "" {
		for k := 1; k <= n; k++ {
			s := sets[k]
			switch {
			case s == nil:
				shape = fmt.Sprintf("ARC set i=%d is missing", k)
			case s.aar == nil:
				shape = fmt.Sprintf("ARC set i=%d has no %s", k, aarField)
			case s.ams == nil:
				shape = fmt.Sprintf("ARC set i=%d has no %s", k, amsField)
			case s.as == nil:
				shape = fmt.Sprintf("ARC set i=%d has no %s", k, asField)
			}
			if shape != "" {
				break
			}
		}
	}
	if shape != "" {
		r := arcFail(n, "%s", shape)
		// Nothing usable to extend: a new set could not be numbered.
		r.closed = n >= MaxARCInstance || n == 0
		return nil, n, r
	}
	return sets, n, ARCResult{}
}

// verifyAMS checks an ARC-Message-Signature over the message, as a
// DKIM-Signature is checked (RFC 8617 §4.1.2).
func (v *Verifier) verifyAMS(ctx context.Context, fields []field, ams *field, n int, body func() (io.Reader, error)) (Status, string, error) {
	tags, err := strictTags(ams.value())
	if err != nil {
		return Fail, err.Error(), nil
	}
	for _, t := range []string{"a", "b", "bh", "d", "h", "s"} {
		if _, ok := tags[t]; !ok {
			return Fail, "no " + t + "= tag", nil
		}
	}
	if _, ok := tags["l"]; ok {
		return Fail, "l= (a signature over part of the body) is not accepted", nil
	}
	headerC, bodyC, _ := strings.Cut(tags["c"], "/")
	relaxedHeader, relaxedBody := false, false
	for _, c := range []struct {
		name    string
		relaxed *bool
	}{{headerC, &relaxedHeader}, {bodyC, &relaxedBody}} {
		switch strings.ToLower(c.name) {
		case "", "simple":
		case "relaxed":
			*c.relaxed = true
		default:
			return Fail, fmt.Sprintf("unknown canonicalization %.20q", c.name), nil
		}
	}
	var names []string
	for _, name := range strings.Split(tags["h"], ":") {
		name = strings.TrimSpace(name)
		if strings.EqualFold(name, asField) {
			return Fail, "h= includes ARC-Seal", nil
		}
		names = append(names, name)
	}
	want, err := base64.StdEncoding.DecodeString(tags["bh"])
	if err != nil {
		return Fail, "bh= is not base64", nil
	}
	got, err := bodyHash(body, relaxedBody)
	if err != nil {
		return "", "", fmt.Errorf("dkim: verify ARC: %w", err)
	}
	if !bytes.Equal(got, want) {
		return Fail, "body hash did not verify", nil
	}
	st, reason := v.checkSignature(ctx, tags, headerHash(selectFields(fields, names), ams.raw, relaxedHeader))
	return st, reason, nil
}

// checkSignature verifies b= of a signature with tags over digest, with
// the key at s= and d=.
func (v *Verifier) checkSignature(ctx context.Context, tags map[string]string, digest []byte) (Status, string) {
	for _, t := range []string{"a", "b", "d", "s"} {
		if tags[t] == "" {
			return Fail, "no " + t + "= tag"
		}
	}
	sig, err := base64.StdEncoding.DecodeString(tags["b"])
	if err != nil {
		return Fail, "b= is not base64"
	}
	name := RecordName(tags["s"], tags["d"])
	txts, err := v.lookup(ctx, name)
	var tmp temporaryError
	if errors.As(err, &tmp) {
		return TempError, err.Error()
	}
	if err != nil {
		return Fail, err.Error()
	}
	// A name may have several TXT records; the key is the one that
	// parses (RFC 6376 §3.6.2.2 leaves the choice to the verifier).
	var pub crypto.PublicKey
	for _, txt := range txts {
		if pub, err = parseKeyRecord(txt); err == nil {
			break
		}
	}
	if pub == nil {
		if err == nil {
			err = errNoKey
		}
		return Fail, fmt.Sprintf("key %s: %v", name, err)
	}
	if err := verifyDigest(pub, strings.ToLower(tags["a"]), digest, sig); err != nil {
		return Fail, err.Error()
	}
	return Pass, ""
}

// strictTags parses a tag list (RFC 6376 §3.2) with the whitespace in
// values removed, refusing a tag given twice or a part without "=".
func strictTags(v string) (map[string]string, error) {
	tags := map[string]string{}
	for _, t := range strings.Split(v, ";") {
		if strings.TrimSpace(t) == "" {
			continue // a trailing ";" is allowed
		}
		name, value, ok := strings.Cut(t, "=")
		if !ok {
			return nil, fmt.Errorf("malformed tag %.20q", strings.TrimSpace(t))
		}
		name = strings.TrimSpace(name)
		if _, dup := tags[name]; dup {
			return nil, fmt.Errorf("tag %.20q given twice", name)
		}
		tags[name] = strings.Join(strings.Fields(value), "")
	}
	return tags, nil
}
