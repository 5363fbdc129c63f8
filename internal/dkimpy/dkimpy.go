// Package dkimpy runs dkimpy's ARC code (python3-dkim, the reference
// implementation of arcsign and arcverify) for tests, with keys served
// from a table instead of DNS. A test that calls it is skipped when
// dkimpy is not installed.
package dkimpy

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

// verifyScript prints dkimpy's verdict on each message file, one line
// each, in one python run, as python starts slowly. arcverify itself
// cannot be given keys; this is what it runs, with a dnsfunc that serves
// them from the JSON table.
const verifyScript = `
import sys, json, dkim
keys = json.load(open(sys.argv[1]))
def dnsfunc(name, timeout=5):
    rec = keys.get(name.decode().rstrip('.').lower())
    return rec.encode() if rec else None
for f in sys.argv[2:]:
    cv, results, reason = dkim.arc_verify(open(f, 'rb').read(), dnsfunc=dnsfunc)
    print((cv or b'none-terminated').decode(), reason)
`

const python = "/usr/bin/python3"

// ARCVerify returns dkimpy's arc_verify verdict on each message, as
// "STATUS REASON": "pass success", "fail …", or "none-terminated …" for
// a chain whose latest seal says cv=fail. keys are DKIM key records by
// lower-case name ("arc._domainkey.b.test").
func ARCVerify(t testing.TB, keys map[string]string, msgs ...[]byte) []string {
	t.Helper()
	out := verify(t, keys, msgs)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(msgs) {
		t.Fatalf("dkimpy verify printed %q for %d messages", out, len(msgs))
	}
	return lines
}

// ARCSign returns msg sealed by dkimpy's arcsign command for domain with
// key (dkimpy seals with RSA only): its ARC set, then msg. arcsign takes
// the verdicts, and cv=, from the message's Authentication-Results fields
// of srvID. The test is skipped when arcsign is not installed.
func ARCSign(t testing.TB, msg []byte, selector, domain string, key *rsa.PrivateKey, srvID string) []byte {
	t.Helper()
	const arcsign = "/usr/bin/arcsign"
	if _, err := os.Stat(arcsign); err != nil {
		t.Skipf("dkimpy's arcsign not available (%v); Debian: apt-get install python3-dkim", err)
	}
	// dkimpy reads PKCS#1 ("RSA PRIVATE KEY") files.
	kf := filepath.Join(t.TempDir(), "key.pem")
	der := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(kf, der, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(arcsign, selector, domain, kf, srvID)
	cmd.Stdin = bytes.NewReader(msg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr // its debug log
	out, err := cmd.Output()
	if err != nil || !bytes.HasPrefix(out, []byte("ARC-Seal: ")) {
		t.Fatalf("arcsign: %v\n%s%s", err, out, stderr.Bytes())
	}
	return out
}

func verify(t testing.TB, keys map[string]string, msgs [][]byte) string {
	t.Helper()
	if err := exec.Command(python, "-c", "import dkim, authres").Run(); err != nil {
		t.Skipf("dkimpy not available (%s -c 'import dkim, authres': %v); Debian: apt-get install python3-dkim python3-authres", python, err)
	}
	dir := t.TempDir()
	kf := filepath.Join(dir, "keys.json")
	kj, err := json.Marshal(keys)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kf, kj, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := []string{"-c", verifyScript, kf}
	for i, m := range msgs {
		mf := filepath.Join(dir, fmt.Sprintf("%d.eml", i))
		if err := os.WriteFile(mf, m, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd = append(cmd, mf)
	}
	out, err := exec.Command(python, cmd...).CombinedOutput()
	if err != nil {
		t.Fatalf("dkimpy arc_verify: %v\n%s", err, out)
	}
	return string(out)
}
