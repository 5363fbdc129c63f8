package dkim

import (
	"bytes"
	"crypto/rsa"
	"testing"

	"github.com/relay-mta/relay/internal/dkimpy"
)

func TestARCDkimpyVerifiesOurSeals(t *testing.T) {
	hops, v := arcHops(t)
	one := hop(t, v, hops[0], []byte(testMsg))
	two := hop(t, v, hops[1], one)
	cases := []struct {
		name string
		msg  []byte
		want string
	}{
		{"one hop", one, "pass success"},
		{"two hops", two, "pass success"},
		{"three hops", hop(t, v, hops[2], two), "pass success"},
		{"tampered", bytes.Replace(two, []byte("body line two"), []byte("body line 2"), 1), "fail Most recent ARC-Message-Signature did not validate"},
		{"seal of set 1", bytes.Replace(two, []byte("cv=none;\r\n\td=b.test"), []byte("cv=none;\r\n\td=B.test"), 1), "fail ARC-Seal[2] did not validate"},
		{"sealed as failed", hop(t, v, hops[1], bytes.Replace(one, []byte("Subject: hello"), []byte("Subject: hullo"), 1)), "none-terminated ARC-Seal[2] reported failure, the chain is terminated"},
	}
	var msgs [][]byte
	for _, c := range cases {
		msgs = append(msgs, c.msg)
	}
	got := dkimpy.ARCVerify(t, v.Keys, msgs...)
	for i, c := range cases {
		if got[i] != c.want {
			t.Errorf("%s: dkimpy says %q, want %q\n%s", c.name, got[i], c.want, c.msg)
		}
	}
}

func TestARCVerifiesDkimpySeals(t *testing.T) {
	hops, v := arcHops(t)
	k := key(t, RSA)
	rec, _ := TXTValue(k.Public())
	v.Keys["py._domainkey.p.test"] = rec
	v.Keys["py._domainkey.q.test"] = rec
	// dkimpy takes the set's verdicts, and cv=, from the
	// Authentication-Results fields of its authserv-id.
	pySeal := func(msg []byte, domain, results string) []byte {
		msg = append([]byte("Authentication-Results: mx."+domain+"; "+results+"\r\n"), msg...)
		return dkimpy.ARCSign(t, msg, "py", domain, k.(*rsa.PrivateKey), "mx."+domain)
	}
	one := pySeal([]byte(testMsg), "p.test", "dkim=pass header.d=a.test")
	if res := verifyARC(t, v, one); res.Status != Pass || res.String() != "arc=pass (i=1 d=p.test)" {
		t.Fatalf("dkimpy's seal: %+v\n%s", res, one)
	}
	two := pySeal(one, "q.test", "arc=pass")
	if res := verifyARC(t, v, two); res.Status != Pass || res.String() != "arc=pass (i=2 d=q.test)" {
		t.Fatalf("dkimpy's two seals: %+v\n%s", res, two)
	}
	tampered := bytes.Replace(two, []byte("Subject: hello"), []byte("Subject: hullo"), 1)
	if res := verifyARC(t, v, tampered); res.Status != Fail || res.Reason != "ARC-Message-Signature i=2: signature did not verify" {
		t.Errorf("dkimpy's seals over a changed message: %+v", res)
	}
	// A mixed chain: our seal on dkimpy's two, checked by dkimpy.
	three := hop(t, v, hops[0], two)
	if res := verifyARC(t, v, three); res.Status != Pass || res.Instance != 3 {
		t.Errorf("our seal on dkimpy's: %+v", res)
	}
	if got := dkimpy.ARCVerify(t, v.Keys, three); got[0] != "pass success" {
		t.Errorf("dkimpy on a chain of its seals and ours: %q", got)
	}
}
