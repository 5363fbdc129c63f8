package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relay-mta/relay/dkim"
	"github.com/relay-mta/relay/relay/resolve/dnstest"
)

// `relay auth check` against a real unbound: a signed message from an
// address a.test's SPF allows passes every method; an unsigned one from
// elsewhere is refused as the [auth] section of --config says, with the
// daemon's reply, exit status 1.
func TestAuthCheck(t *testing.T) {
	key, err := dkim.GenerateKey(dkim.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	record, err := dkim.TXTValue(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	srv := dnstest.Start(t, "127.0.28.2", dnstest.Zone{Name: "a.test", Records: []string{
		`@ TXT "v=spf1 ip4:127.0.28.20 -all"`,
		`_dmarc TXT "v=DMARC1; p=reject"`,
		`s1._domainkey TXT "` + record + `"`,
	}})
	msg := "From: <sender@a.test>\r\nTo: <alice@c.test>\r\nSubject: check\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <check@a.test>\r\n\r\nHello.\r\n"
	signed, err := (&dkim.Signer{Domain: "a.test", Keys: []dkim.Key{{Selector: "s1", Signer: key}}}).Sign([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	signedFile, plainFile := write("signed.eml", string(signed)), write("plain.eml", msg)
	base := fmt.Sprintf("hostname = \"cli.test\"\ndata_dir = \".\"\n[dns]\nservers = [%q]\n", srv.Addr)
	plainCfg := write("plain.toml", base)
	spfCfg := write("spf.toml", base+"[auth]\nspf = true\nspf_reject_fail = true\n")
	dmarcCfg := write("dmarc.toml", base+"[auth]\nspf = true\ndmarc = true\ndmarc_reject = true\n")

	for _, c := range []struct {
		name, cfg, ip, file string
		want                []string
		code                int
	}{
		{"signed, allowed address", plainCfg, "127.0.28.20", signedFile, []string{
			"Authentication-Results: cli.test;\n\tdkim=pass header.d=a.test header.s=s1 header.a=ed25519-sha256 header.b=",
			";\n\tspf=pass smtp.mailfrom=sender@a.test;\n\tdmarc=pass (p=reject dis=none) header.from=a.test\n",
			"\ndkim=pass header.d=a.test", "\nspf=pass smtp.mailfrom=sender@a.test\n", "\ndmarc=pass (p=reject dis=none) header.from=a.test\n", "\narc=none\n", "\naccepted\n",
		}, 0},
		{"signed, other address: DMARC passes on DKIM", spfCfg, "127.0.28.21", signedFile, []string{
			"\nspf=fail smtp.mailfrom=sender@a.test\n", "\ndmarc=pass (p=reject dis=none) header.from=a.test\n",
			"\nrefused: 550 5.7.23 SPF check failed: 127.0.28.21 is not allowed to send mail for a.test\n",
		}, 1},
		{"unsigned, other address, no refusals: marked", plainCfg, "127.0.28.21", plainFile, []string{
			"\nX-Relay-DMARC: quarantine (dmarc=fail (p=reject dis=reject) header.from=a.test) by cli.test\n",
			"\ndkim=none\n", "\nspf=fail smtp.mailfrom=sender@a.test\n", "\ndmarc=fail (p=reject dis=reject) header.from=a.test\n",
			"\naccepted\n",
		}, 0},
		{"unsigned, other address, dmarc_reject", dmarcCfg, "127.0.28.21", plainFile, []string{
			"\nrefused: 550 5.7.1 Message rejected by the DMARC policy of a.test\n",
		}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, code, stderr := runCaptured(t, "relay", "auth", "check", "--config", c.cfg, "--ip", c.ip, "--helo", "mx.a.test", "--mail-from", "sender@a.test", c.file)
			t.Logf("output:\n%s", out)
			if code != c.code {
				t.Errorf("exit %d, want %d; stderr %s", code, c.code, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q", w)
				}
			}
		})
	}
}

// runCaptured runs the CLI and returns its standard output, exit status
// and standard error.
func runCaptured(t *testing.T, args ...string) (string, int, string) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = f
	var stderr bytes.Buffer
	code := runApp(context.Background(), args, &stderr)
	os.Stdout = stdout
	f.Close()
	b, _ := os.ReadFile(f.Name())
	return string(b), code, stderr.String()
}
