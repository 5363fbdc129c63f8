package dkim

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// dkimpyARC runs dkimpy's ARC code (python3-dkim, the reference
// implementation behind arcsign and arcverify) with keys served from the
// table instead of DNS:
//
//	verify MSGFILE...: prints per message the chain validation status
//	    and dkimpy's reason, on one line
//	sign MSGFILE SELECTOR DOMAIN KEYFILE SRV_ID: prints the new ARC set
//
// Python starts slowly, so one run verifies many messages.
const dkimpyARC = `
import sys, json, dkim
mode, keys, files = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3:]
def dnsfunc(name, timeout=5):
    rec = keys.get(name.decode().rstrip('.').lower())
    return rec.encode() if rec else None
if mode == 'verify':
    for f in files:
        cv, results, reason = dkim.arc_verify(open(f, 'rb').read(), dnsfunc=dnsfunc)
        print((cv or b'none-terminated').decode(), reason)
else:
    msg, (sel, dom, keyfile, srv) = open(files[0], 'rb').read(), files[1:5]
    sys.stdout.buffer.write(b''.join(dkim.arc_sign(msg, sel.encode(), dom.encode(), open(keyfile, 'rb').read(), srv.encode())))
`

// dkimpy runs the script, mode "verify" or "sign", over msgs, followed
// by args; the test is skipped when dkimpy is not there.
func dkimpy(t *testing.T, keys map[string]string, mode string, msgs [][]byte, args ...string) string {
	t.Helper()
	const python = "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import dkim, authres").Run(); err != nil {
		t.Skipf("dkimpy not available (%s -c 'import dkim, authres': %v); Debian: apt-get install python3-dkim", python, err)
	}
	dir := t.TempDir()
	kf := filepath.Join(dir, "keys.json")
	kj, _ := json.Marshal(keys)
	if err := os.WriteFile(kf, kj, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := []string{"-c", dkimpyARC, mode, kf}
	for i, m := range msgs {
		mf := filepath.Join(dir, fmt.Sprintf("%d.eml", i))
		if err := os.WriteFile(mf, m, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd = append(cmd, mf)
	}
	out, err := exec.Command(python, append(cmd, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("dkimpy %s: %v\n%s", mode, err, out)
	}
	return string(out)
}

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
	got := strings.Split(strings.TrimSuffix(dkimpy(t, v.Keys, "verify", msgs), "\n"), "\n")
	if len(got) != len(cases) {
		t.Fatalf("dkimpy printed %q", got)
	}
	for i, c := range cases {
		if got[i] != c.want {
			t.Errorf("%s: dkimpy says %q, want %q\n%s", c.name, got[i], c.want, c.msg)
		}
	}
}

func TestARCVerifiesDkimpySeals(t *testing.T) {
	hops, v := arcHops(t)
	// dkimpy seals with RSA only, from a PKCS#1 key file.
	k := key(t, RSA)
	dir := t.TempDir()
	kf := filepath.Join(dir, "p.pem")
	der := x509.MarshalPKCS1PrivateKey(k.(*rsa.PrivateKey))
	if err := os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	rec, _ := TXTValue(k.Public())
	v.Keys["py._domainkey.p.test"] = rec
	v.Keys["py._domainkey.q.test"] = rec
	// dkimpy takes the set's verdicts, and cv=, from the
	// Authentication-Results fields of its authserv-id.
	pySeal := func(msg []byte, domain, results string) []byte {
		msg = append([]byte("Authentication-Results: mx."+domain+"; "+results+"\r\n"), msg...)
		set := dkimpy(t, v.Keys, "sign", [][]byte{msg}, "py", domain, kf, "mx."+domain)
		if !strings.HasPrefix(set, "ARC-Seal: ") {
			t.Fatalf("dkimpy sealed nothing: %q", set)
		}
		return append([]byte(set), msg...)
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
	if got := dkimpy(t, v.Keys, "verify", [][]byte{three}); got != "pass success\n" {
		t.Errorf("dkimpy on a chain of its seals and ours: %q", got)
	}
}
