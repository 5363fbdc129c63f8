// Package dkimpy runs dkimpy's ARC code (python3-dkim, the reference
// implementation behind arcsign and arcverify) for tests, with keys served
// from a table instead of DNS. A test that calls it is skipped when
// /usr/bin/python3 cannot import dkim and authres.
package dkimpy

import (
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

// script does the work in one python run, as python starts slowly:
//
//	verify KEYS MSGFILE...: per message, the chain validation status and
//	    dkimpy's reason on one line
//	sign KEYS MSGFILE SELECTOR DOMAIN KEYFILE SRV_ID: the new ARC set
const script = `
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

const python = "/usr/bin/python3"

// ARCVerify returns dkimpy's arc_verify verdict on each message, as
// "STATUS REASON": "pass success", "fail …", or "none-terminated …" for
// a chain whose latest seal says cv=fail. keys are DKIM key records by
// lower-case name ("arc._domainkey.b.test").
func ARCVerify(t testing.TB, keys map[string]string, msgs ...[]byte) []string {
	t.Helper()
	out := run(t, keys, "verify", msgs)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(msgs) {
		t.Fatalf("dkimpy verify printed %q for %d messages", out, len(msgs))
	}
	return lines
}

// ARCSign returns the ARC set dkimpy's arc_sign (what arcsign runs) adds
// to msg, sealing for domain with key (dkimpy seals with RSA only); it
// takes the verdicts, and cv=, from the message's Authentication-Results
// fields of srvID. keys serve the lookups of the chain already there.
func ARCSign(t testing.TB, keys map[string]string, msg []byte, selector, domain string, key *rsa.PrivateKey, srvID string) []byte {
	t.Helper()
	// dkimpy reads PKCS#1 ("RSA PRIVATE KEY") files.
	kf := filepath.Join(t.TempDir(), "key.pem")
	der := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(kf, der, 0o600); err != nil {
		t.Fatal(err)
	}
	return []byte(run(t, keys, "sign", [][]byte{msg}, selector, domain, kf, srvID))
}

func run(t testing.TB, keys map[string]string, mode string, msgs [][]byte, args ...string) string {
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
	cmd := []string{"-c", script, mode, kf}
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
