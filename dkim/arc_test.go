package dkim

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"io"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// arcHops are three intermediaries, b.test, c.test and d.test, and a
// verifier that knows their keys.
func arcHops(t *testing.T) ([]*Sealer, *Verifier) {
	t.Helper()
	v := &Verifier{Keys: map[string]string{}, Resolver: noDNS{}}
	var hops []*Sealer
	for i := range 3 {
		k := key(t, RSA)
		domain := string(rune('b'+i)) + ".test"
		rec, err := TXTValue(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		v.Keys[RecordName("arc", domain)] = rec
		hops = append(hops, &Sealer{Domain: domain, Key: Key{Selector: "arc", Signer: k},
			Now: func() time.Time { return time.Unix(1795000000, 0) }})
	}
	return hops, v
}

func verifyARC(t *testing.T, v *Verifier, msg []byte) ARCResult {
	t.Helper()
	header, rest := splitHeader(msg)
	res, err := v.VerifyARC(context.Background(), header, func() (io.Reader, error) { return bytes.NewReader(rest), nil })
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// hop is what an intermediary does: verify the chain as the message
// arrives, record the verdict, seal, and pass the message on.
func hop(t *testing.T, v *Verifier, s *Sealer, msg []byte) []byte {
	t.Helper()
	res := verifyARC(t, v, msg)
	set, err := s.Seal(msg, res, "mx."+s.Domain, []string{"spf=pass smtp.mailfrom=a.test", res.String()})
	if err != nil {
		t.Fatal(err)
	}
	if set == nil {
		return msg
	}
	return append(append([]byte("Received: from somewhere by mx."+s.Domain+"\r\n"), set...), msg...)
}

func TestARCSealVerifyRoundTrip(t *testing.T) {
	hops, v := arcHops(t)
	msg := []byte(testMsg)
	if res := verifyARC(t, v, msg); res.Status != None || res.String() != "arc=none" {
		t.Fatalf("message without ARC fields: %+v (%s), want none", res, res)
	}
	for i, s := range hops {
		msg = hop(t, v, s, msg)
		res := verifyARC(t, v, msg)
		want := "arc=pass (i=" + string(rune('1'+i)) + " d=" + s.Domain + ")"
		if res.Status != Pass || res.Instance != i+1 || res.String() != want {
			t.Fatalf("after %d hops: %+v, want %s\n%s", i+1, res, want, msg)
		}
	}
	// What each hop wrote: its verdict in its AAR, the chain's status in cv=.
	for _, want := range []string{
		"ARC-Authentication-Results: i=1; mx.b.test;\r\n\tspf=pass smtp.mailfrom=a.test;\r\n\tarc=none\r\n",
		"ARC-Authentication-Results: i=2; mx.c.test;\r\n\tspf=pass smtp.mailfrom=a.test;\r\n\tarc=pass (i=1 d=b.test)\r\n",
		"ARC-Seal: i=1; a=rsa-sha256; t=1795000000; cv=none;\r\n\td=b.test; s=arc;\r\n\tb=",
		"ARC-Seal: i=2; a=rsa-sha256; t=1795000000; cv=pass;\r\n\td=c.test; s=arc;\r\n\tb=",
		"ARC-Message-Signature: i=3; a=rsa-sha256; c=relaxed/relaxed; d=d.test;\r\n\ts=arc; t=1795000000;\r\n\th=From:To:Subject:Date:Message-ID:From;\r\n\tbh=",
	} {
		if !bytes.Contains(msg, []byte(want)) {
			t.Errorf("sealed message lacks %q:\n%s", want, msg)
		}
	}
	// Changes that relaxed canonicalization and the choice of signed
	// fields allow: trace fields on top, refolded whitespace, an unsigned
	// field changed, trailing empty lines.
	kept := bytes.Replace(msg, []byte("Subject: hello\r\n"), []byte("Subject:   hello \r\n"), 1)
	kept = bytes.Replace(kept, []byte("X-Unsigned: anything"), []byte("X-Unsigned: else"), 1)
	kept = append([]byte("Authentication-Results: mx.e.test; arc=pass\r\nReceived: by mx.e.test\r\n"), kept...)
	kept = append(kept, "\r\n\r\n"...)
	if res := verifyARC(t, v, kept); res.Status != Pass {
		t.Errorf("after harmless changes: %+v, want pass", res)
	}
}

func TestARCTamperingFails(t *testing.T) {
	hops, v := arcHops(t)
	msg := hop(t, v, hops[1], hop(t, v, hops[0], []byte(testMsg)))
	for _, c := range []struct{ name, old, new, reason string }{
		{"body", "body line two", "body line 2", "ARC-Message-Signature i=2: body hash did not verify"},
		{"signed field", "Subject: hello", "Subject: hullo", "ARC-Message-Signature i=2: signature did not verify"},
		{"From added", "From: Sender", "From: Boss <boss@a.test>\r\nFrom: Sender", "ARC-Message-Signature i=2: signature did not verify"},
		{"first AAR", "i=1; mx.b.test;\r\n\tspf=pass", "i=1; mx.b.test;\r\n\tspf=fail", "ARC-Seal i=2: signature did not verify"},
		{"first seal's spacing", "; cv=none;", ";   cv=none;", ""}, // relaxed: still pass
	} {
		t.Run(c.name, func(t *testing.T) {
			changed := bytes.Replace(msg, []byte(c.old), []byte(c.new), 1)
			if bytes.Equal(changed, msg) {
				t.Fatalf("%q not in message", c.old)
			}
			res := verifyARC(t, v, changed)
			if c.reason == "" {
				if res.Status != Pass {
					t.Errorf("got %+v, want pass", res)
				}
				return
			}
			if res.Status != Fail || res.Reason != c.reason {
				t.Errorf("got %s %q, want fail %q", res.Status, res.Reason, c.reason)
			}
		})
	}
}

// TestARCFailedChain: a hop that finds the chain broken seals it with
// cv=fail over its own set only; the chain then fails for everyone, and
// no later hop adds to it (RFC 8617 §5.1 step 1).
func TestARCFailedChain(t *testing.T) {
	hops, v := arcHops(t)
	msg := hop(t, v, hops[0], []byte(testMsg))
	msg = bytes.Replace(msg, []byte("body line two"), []byte("body line 2"), 1)
	msg = hop(t, v, hops[1], msg)
	if !bytes.Contains(msg, []byte("ARC-Seal: i=2; a=rsa-sha256; t=1795000000; cv=fail;")) {
		t.Fatalf("second hop did not seal with cv=fail:\n%s", msg)
	}
	if !bytes.Contains(msg, []byte(`arc=fail reason="ARC-Message-Signature i=1: body hash did not verify" (i=1 d=b.test)`)) {
		t.Errorf("second hop's AAR lacks its verdict:\n%s", msg)
	}
	res := verifyARC(t, v, msg)
	if res.Status != Fail || res.Reason != "ARC-Seal i=2 says cv=fail" || res.Instance != 2 {
		t.Errorf("failed chain verifies as %+v", res)
	}
	if again := hop(t, v, hops[2], msg); !bytes.Equal(again, msg) {
		t.Errorf("a chain sealed with cv=fail was extended:\n%s", again)
	}
}

func TestARCChainShapes(t *testing.T) {
	hops, v := arcHops(t)
	one := hop(t, v, hops[0], []byte(testMsg))
	three := hop(t, v, hops[2], hop(t, v, hops[1], one))
	set2 := regexp.MustCompile(`(?s)ARC-Seal: i=2;.*?ARC-Authentication-Results: i=2;(?:[^\r]|\r\n\t)*\r\n`)
	if !set2.Match(three) {
		t.Fatal("set 2 not found")
	}
	dupAMS := regexp.MustCompile(`ARC-Message-Signature: i=1;[^\r]*(\r\n\t[^\r]*)*\r\n`).Find(one)
	for _, c := range []struct {
		name   string
		msg    []byte
		reason string
		closed bool
	}{
		{"gap", set2.ReplaceAll(three, nil), "ARC set i=2 is missing", false},
		{"duplicate", append(append([]byte(nil), dupAMS...), one...), "two ARC-Message-Signature fields with i=1", false},
		{"incomplete", bytes.Replace(one, []byte("ARC-Authentication-Results: i=1"), []byte("X-Was-AAR: i=1"), 1), "ARC set i=1 has no ARC-Authentication-Results", false},
		{"instance 0", bytes.Replace(one, []byte("ARC-Seal: i=1"), []byte("ARC-Seal: i=0"), 1), `ARC-Seal with invalid instance "0"`, false},
		{"instance 51", bytes.ReplaceAll(one, []byte("i=1;"), []byte("i=51;")), "ARC-Seal i=51 exceeds 50", true},
		{"no instance", []byte("ARC-Seal: a=rsa-sha256; cv=none\r\n" + testMsg), `ARC-Seal with invalid instance ""`, true},
		{"first cv", bytes.Replace(one, []byte("cv=none"), []byte("cv=pass"), 1), `ARC-Seal i=1 has cv="pass", want none`, false},
		{"later cv", bytes.Replace(three, []byte("i=3; a=rsa-sha256; t=1795000000; cv=pass"), []byte("i=3; a=rsa-sha256; t=1795000000; cv=none"), 1), `ARC-Seal i=3 has cv="none", want pass`, false},
		{"duplicate tag", bytes.Replace(one, []byte("cv=none;"), []byte("cv=none; cv=none;"), 1), `ARC-Seal i=1: tag "cv" given twice`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := verifyARC(t, v, c.msg)
			if res.Status != Fail || res.Reason != c.reason {
				t.Fatalf("got %s %q, want fail %q", res.Status, res.Reason, c.reason)
			}
			set, err := hops[1].Seal(c.msg, res, "mx.c.test", []string{res.String()})
			if err != nil {
				t.Fatal(err)
			}
			if c.closed != (set == nil) {
				t.Errorf("sealed: %v, want %v", set != nil, !c.closed)
			}
			if set != nil && !bytes.Contains(set, []byte("cv=fail")) {
				t.Errorf("broken chain sealed without cv=fail:\n%s", set)
			}
		})
	}
}

// TestARCKeyProblems: a temporary DNS failure is temperror, which no hop
// may seal; a missing or wrong key is fail.
func TestARCKeyProblems(t *testing.T) {
	hops, v := arcHops(t)
	msg := hop(t, v, hops[0], []byte(testMsg))

	dns := &fakeDNS{err: &net_tempError}
	tmp := verifyARC(t, &Verifier{Resolver: dns}, msg)
	if tmp.Status != TempError || !strings.Contains(tmp.Reason, "temporary DNS failure for arc._domainkey.b.test") {
		t.Errorf("DNS failure: %+v, want temperror", tmp)
	}
	if _, err := hops[1].Seal(msg, tmp, "mx.c.test", nil); err == nil {
		t.Error("a chain of unknown status was sealed")
	}
	if res := verifyARC(t, &Verifier{Resolver: noDNS{}}, msg); res.Status != Fail || !strings.Contains(res.Reason, "no key record at arc._domainkey.b.test") {
		t.Errorf("unknown key: %+v, want fail", res)
	}
	other, _ := TXTValue(key(t, Ed25519).Public())
	if res := verifyARC(t, &Verifier{Keys: map[string]string{"arc._domainkey.b.test": other}}, msg); res.Status != Fail || !strings.Contains(res.Reason, "key type ed25519 does not match a=rsa-sha256") {
		t.Errorf("key of the wrong type: %+v, want fail", res)
	}
	if _, err := (&Sealer{Domain: "c.test", Key: Key{Selector: "arc", Signer: key(t, Ed25519)}}).Seal(msg, verifyARC(t, v, msg), "mx.c.test", nil); err == nil || !strings.Contains(err.Error(), "need an rsa key") {
		t.Errorf("sealing with an ed25519 key: %v", err)
	}
	if res := verifyARC(t, &Verifier{Keys: map[string]string{"arc._domainkey.b.test": "v=DKIM1; k=rsa; p="}}, msg); res.Status != Fail || !strings.Contains(res.Reason, "key revoked") {
		t.Errorf("revoked key: %+v, want fail", res)
	}
}

var net_tempError = temporaryError{name: "x", err: errors.New("server failure")}

// TestCanonicalizationMatchesGoMsgauth checks the primitives against
// go-msgauth's DKIM signer: the body hash it writes is the one computed
// here, and its signature verifies over the header fields as selected
// and canonicalized here.
func TestCanonicalizationMatchesGoMsgauth(t *testing.T) {
	for _, alg := range []Algorithm{RSA, Ed25519} {
		t.Run(string(alg), func(t *testing.T) { canonicalizationMatches(t, key(t, alg)) })
	}
}

func canonicalizationMatches(t *testing.T, k crypto.Signer) {
	alg, _ := KeyAlgorithm(k)
	header := "From: a@a.test\r\nSubject:  lots   of\r\n\t space \r\nTo:b@b.test \r\nSubject: second\r\n\r\n"
	for _, body := range []string{
		"", "\r\n", "\r\n\r\n", "line\r\n", "line", "line  \r\n \r\n\t\r\n",
		"a  b\t\tc \r\n\r\n\r\nd\r\n\r\n", "lf only\nline two \n\n", "cr\rinside\r\n", " lead\r\n",
	} {
		for _, c := range []msgauth.Canonicalization{msgauth.CanonicalizationRelaxed, msgauth.CanonicalizationSimple} {
			var out bytes.Buffer
			err := msgauth.Sign(&out, strings.NewReader(header+body), &msgauth.SignOptions{
				Domain: "a.test", Selector: "s", Signer: k, Hash: crypto.SHA256,
				HeaderCanonicalization: c, BodyCanonicalization: c,
				HeaderKeys: []string{"Subject", "From", "Subject", "To", "Cc"},
			})
			if err != nil {
				t.Fatal(err)
			}
			fields, _ := headerFields(out.Bytes())
			tags := parseTags(fields[0].value())
			relaxed := c == msgauth.CanonicalizationRelaxed
			bh, err := bodyHash(func() (io.Reader, error) { return strings.NewReader(body), nil }, relaxed)
			if err != nil {
				t.Fatal(err)
			}
			if got := base64.StdEncoding.EncodeToString(bh); got != tags["bh"] {
				t.Errorf("%s body %q: bh=%s, go-msgauth %s", c, body, got, tags["bh"])
			}
			sig, _ := base64.StdEncoding.DecodeString(tags["b"])
			digest := headerHash(selectFields(fields[1:], strings.Split(tags["h"], ":")), fields[0].raw, relaxed)
			if err := verifyDigest(k.Public(), string(alg)+"-sha256", digest, sig); err != nil {
				t.Errorf("%s: go-msgauth's signature over the header: %v", c, err)
			}
		}
	}
}

// TestBodyHashStreams: hashing a body does not hold it in memory.
func TestBodyHashStreams(t *testing.T) {
	const size = 32 << 20
	line := []byte(strings.Repeat("word  ", 12) + "\r\n")
	body := func() (io.Reader, error) {
		return io.LimitReader(&repeatReader{line: line}, size), nil
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := bodyHash(body, true); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Errorf("hashing a %d MiB body allocated %d KiB", size>>20, grew>>10)
	}
}

type repeatReader struct {
	line []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.line[r.off:])
		n += c
		r.off = (r.off + c) % len(r.line)
	}
	return n, nil
}
