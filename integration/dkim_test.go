package integration

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/dkim"
	"github.com/relay-mta/relay/relay/config"
)

// signedMsg is a message from sender@a.test to alice@c.test with the
// header fields a signature covers.
func signedMsg(from, to, subject string) string {
	return "From: Sender <" + from + ">\r\n" +
		"To: <" + to + ">\r\n" +
		"Subject: " + subject + "\r\n" +
		"Date: Sat, 21 Nov 2026 09:00:00 +0000\r\n" +
		"Message-ID: <" + strings.ReplaceAll(subject, " ", "-") + "@a.test>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=us-ascii\r\n" +
		"\r\n" +
		"The original body of " + subject + ".\r\n"
}

// waitMessage waits for the first message in user's mailbox at n.
func waitMessage(t *testing.T, n *node, user string) string {
	t.Helper()
	var msg []byte
	waitFor(t, 20*time.Second, "a message in "+user+"'s mailbox at "+n.name, func() bool {
		if box := n.mailboxRaw(user); len(box) > 0 {
			msg = box[0]
			return true
		}
		return false
	})
	return string(msg)
}

// dkimKey writes a new key of alg for a.test, selector s1, and returns its
// file and its record text.
func dkimKey(t *testing.T, alg dkim.Algorithm) (path, record string) {
	t.Helper()
	k, err := dkim.GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "a.test.s1.pem")
	if err := dkim.WriteKey(path, k); err != nil {
		t.Fatal(err)
	}
	record, err = dkim.TXTValue(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return path, record
}

// dkimChain starts A → B → C with A signing for a.test; B and C verify
// with the key in their static tables. B also has a.test's key, to show
// it does not sign mail that A handed over. The B → C hop goes through a
// Link, returned.
func dkimChain(t *testing.T, alg dkim.Algorithm, configureC func(*config.Config)) (a, b, c *node, bc *Link) {
	t.Helper()
	path, record := dkimKey(t, alg)
	a, b, c = newNode(t, "a", "127.0.0.71"), newNode(t, "b", "127.0.0.72"), newNode(t, "c", "127.0.0.73")
	sign := []config.DKIMSign{{Domain: "a.test", Selector: "s1", Key: path}}
	keys := map[string]string{"s1._domainkey.a.test": record}
	a.cfg.DKIM.Sign = sign
	b.cfg.DKIM.Sign, b.cfg.DKIM.Keys = sign, keys
	c.cfg.DKIM.Keys = keys
	if configureC != nil {
		configureC(c.cfg)
	}
	c.start()
	bc = link(t, "127.0.0.72", c)
	b.route("c.test", bc.Addr())
	b.route("a.test", a.addr)
	b.start()
	a.route("c.test", b.addr)
	a.start()
	return a, b, c, bc
}

// TestDKIMChain: A signs, the message crosses B (which adds its Received
// field and verifies), and C's stored copy says dkim=pass for a.test in
// C's own Authentication-Results.
func TestDKIMChain(t *testing.T) {
	for _, alg := range []dkim.Algorithm{dkim.Ed25519, dkim.RSA} {
		t.Run(string(alg), func(t *testing.T) {
			a, _, c, _ := dkimChain(t, alg, nil)
			if _, err := sendOne(a.addr, "sender@a.test", "alice@c.test", signedMsg("sender@a.test", "alice@c.test", "chain")); err != nil {
				t.Fatal(err)
			}
			msg := waitMessage(t, c, "alice")
			t.Logf("C's copy:\n%s", msg)

			if n := strings.Count(msg, "DKIM-Signature:"); n != 1 {
				t.Errorf("%d DKIM-Signature fields, want 1 (signed once, at A)", n)
			}
			ours := "Authentication-Results: c.test;\r\n\tdkim=pass header.d=a.test header.s=s1 header.a=" + string(alg) + "-sha256 header.b="
			// Top down: C's trace, B's trace, then A's signature.
			order := []string{
				"Received: from b.test", "\tby c.test (relay)",
				ours,
				"Received: from a.test", "\tby b.test (relay)",
				"Authentication-Results: b.test;\r\n\tdkim=pass header.d=a.test",
				"DKIM-Signature: ",
				"From: Sender <sender@a.test>",
			}
			at := 0
			for _, want := range order {
				i := strings.Index(msg[at:], want)
				if i < 0 {
					t.Fatalf("C's copy lacks %q after offset %d", want, at)
				}
				at += i + len(want)
			}
			if strings.Contains(msg, "X-Relay-Handoff") {
				t.Error("hand-off field delivered")
			}
		})
	}
}

// TestDKIMChangedInTransit: the B → C link changes the body or the Subject
// of the signed message; B, before the change, says pass, and C says
// fail, and still delivers (reject_failures is empty).
func TestDKIMChangedInTransit(t *testing.T) {
	for _, c := range []struct{ name, old, new, reason string }{
		{"body", "The original body", "The modified body", "body hash did not verify"},
		{"subject", "Subject: changed in transit", "Subject: changed in transiT", "signature did not verify"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, _, cn, bc := dkimChain(t, dkim.Ed25519, nil)
			bc.RewriteData(c.old, c.new)
			if _, err := sendOne(a.addr, "sender@a.test", "alice@c.test", signedMsg("sender@a.test", "alice@c.test", "changed in transit")); err != nil {
				t.Fatal(err)
			}
			msg := waitMessage(t, cn, "alice")
			if n := bc.Rewritten(); n != 1 {
				t.Fatalf("the link changed %d messages, want 1", n)
			}
			if !strings.Contains(msg, c.new) {
				t.Fatalf("C's copy does not have the change:\n%s", msg)
			}
			want := regexp.MustCompile(`Authentication-Results: c\.test;\r\n\tdkim=fail reason="` + regexp.QuoteMeta(c.reason) + `[^"]*" header\.d=a\.test header\.s=s1 `)
			if !want.MatchString(msg) {
				t.Errorf("C's copy does not match\n%s\n:\n%s", want, msg)
			}
			if !strings.Contains(msg, "Authentication-Results: b.test;\r\n\tdkim=pass header.d=a.test") {
				t.Errorf("B did not see the message intact:\n%s", msg)
			}
		})
	}
}

// TestDKIMRejectFailures: C lists a.test in reject_failures; the message
// changed in transit is refused with 550 5.7.20, and the sender learns
// it from B's bounce.
func TestDKIMRejectFailures(t *testing.T) {
	a, _, c, bc := dkimChain(t, dkim.Ed25519, func(cfg *config.Config) {
		cfg.DKIM.RejectFailures = []string{"a.test"}
	})
	bc.RewriteData("The original body", "The modified body")
	if _, err := sendOne(a.addr, "alice@a.test", "alice@c.test", signedMsg("alice@a.test", "alice@c.test", "refused")); err != nil {
		t.Fatal(err)
	}
	bounce := waitMessage(t, a, "alice")
	t.Logf("bounce:\n%s", bounce)
	if !strings.Contains(bounce, "Status: 5.7.20") {
		t.Errorf("the bounce does not say 5.7.20:\n%s", bounce)
	}
	if box := c.mailboxRaw("alice"); len(box) != 0 || bc.Rewritten() != 1 {
		t.Errorf("C delivered %d messages (link changed %d)", len(box), bc.Rewritten())
	}
}

// dkimpyPython returns the Python that runs python3-dkim's dkimverify (the
// interpreter of its #! line), or skips the test when it is not there.
func dkimpyPython(t *testing.T, tools ...string) string {
	t.Helper()
	for _, tool := range append([]string{"dkimverify"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian: apt-get install python3-dkim; CI installs it)", tool)
		}
	}
	path, _ := exec.LookPath("dkimverify")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	first, _ := bufio.NewReader(f).ReadString('\n')
	interp := strings.Fields(strings.TrimPrefix(first, "#!"))
	if len(interp) == 0 {
		t.Skipf("%s has no #! line", path)
	}
	py := interp[0]
	if filepath.Base(py) == "env" && len(interp) > 1 {
		if py, err = exec.LookPath(interp[1]); err != nil {
			t.Skipf("%s: %v", path, err)
		}
	}
	if out, err := exec.Command(py, "-c", "import dkim, dkim.dkimverify").CombinedOutput(); err != nil {
		t.Skipf("%s cannot import dkim: %v\n%s", py, err, out)
	}
	return py
}

// dkimverifyWrapper runs python3-dkim's own dkimverify command (its main
// function, reading the message on stdin) with its DNS lookup replaced:
// the record is given on the command line, for the name it belongs to.
const dkimverifyWrapper = `import sys, dkim, dkim.dkimverify
name, record = sys.argv[1].encode(), sys.argv[2].encode()
def dnsfunc(qname, timeout=5):
    return record if qname.rstrip(b".").lower() == name else None
d = dkim.DKIM.verify.__defaults__
dkim.DKIM.verify.__defaults__ = d[:-1] + (dnsfunc,)
sys.argv = ["dkimverify"]
dkim.dkimverify.main()
`

// keygenRE reads the record `relay dkim keygen` prints.
var keygenRE = regexp.MustCompile(`^(\S+) IN TXT ((?:"[^"]*" ?)+)\n$`)

// TestDKIMInteropDkimverify: python3-dkim's dkimverify, an independent
// implementation, verifies a message the relay signed, with the DNS
// record that `relay dkim keygen` printed.
func TestDKIMInteropDkimverify(t *testing.T) {
	py := dkimpyPython(t)
	wrapper := filepath.Join(t.TempDir(), "dkimverify_nodns.py")
	if err := os.WriteFile(wrapper, []byte(dkimverifyWrapper), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, alg := range []string{"ed25519", "rsa"} {
		t.Run(alg, func(t *testing.T) {
			if alg == "ed25519" {
				if out, err := exec.Command(py, "-c", "import nacl").CombinedOutput(); err != nil {
					t.Skipf("dkimpy verifies ed25519 with PyNaCl, which is missing: %s", out)
				}
			}
			keyFile := filepath.Join(t.TempDir(), "a.test.s1.pem")
			cmd := exec.Command(relayBinary(t), "dkim", "keygen", "--domain", "a.test", "--selector", "s1", "--algorithm", alg, "--out", keyFile)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("relay dkim keygen: %v\n%s", err, stderr.Bytes())
			}
			m := keygenRE.FindStringSubmatch(string(out))
			if m == nil || m[1] != "s1._domainkey.a.test" {
				t.Fatalf("keygen printed %q, want one TXT record for s1._domainkey.a.test", out)
			}
			var record string // the strings of the record, joined as DNS does
			for _, s := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(m[2], -1) {
				record += s[1]
			}
			t.Logf("keygen: %s", strings.TrimSpace(string(out)))

			a, b := newNode(t, "a", "127.0.0.74"), newNode(t, "b", "127.0.0.75")
			a.cfg.DKIM.Sign = []config.DKIMSign{{Domain: "a.test", Selector: "s1", Key: keyFile}}
			b.cfg.DKIM.Keys = map[string]string{"s1._domainkey.a.test": record}
			b.start()
			a.route("b.test", b.addr)
			a.start()
			if _, err := sendOne(a.addr, "sender@a.test", "alice@b.test", signedMsg("sender@a.test", "alice@b.test", "interop "+alg)); err != nil {
				t.Fatal(err)
			}
			msg := waitMessage(t, b, "alice")
			if !strings.Contains(msg, "Authentication-Results: b.test;\r\n\tdkim=pass header.d=a.test") {
				t.Errorf("the relay's own verdict is not pass:\n%s", msg)
			}

			dkimverify := func(msg string) (string, error) {
				cmd := exec.Command(py, wrapper, "s1._domainkey.a.test", record)
				cmd.Stdin = strings.NewReader(msg)
				out, err := cmd.CombinedOutput()
				return strings.TrimSpace(string(out)), err
			}
			got, err := dkimverify(msg)
			t.Logf("dkimverify: %s", got)
			if err != nil || got != "signature ok" {
				t.Errorf("dkimverify rejects the relay's signature: %v: %s\n%s", err, got, msg)
			}
			// The control: dkimverify does fail a changed message (with
			// "signature verification failed", or, for a body hash
			// mismatch, dkimpy 1.1's uncaught ValidationError).
			changed := strings.Replace(msg, "The original body", "The 0riginal body", 1)
			if got, err := dkimverify(changed); err == nil || strings.Contains(got, "signature ok") {
				t.Errorf("dkimverify accepts a changed message: %v: %s", err, got)
			}
		})
	}
}

// TestDKIMInteropDkimsign: a message signed by python3-dkim's dkimsign,
// with a key and record from its dknewkey, verifies as pass in the relay.
func TestDKIMInteropDkimsign(t *testing.T) {
	py := dkimpyPython(t, "dkimsign", "dknewkey")
	for _, c := range []struct{ ktype, signalg, need string }{
		{"rsa", "rsa-sha256", ""},
		{"ed25519", "ed25519-sha256", "nacl"},
	} {
		t.Run(c.ktype, func(t *testing.T) {
			if c.need != "" {
				if out, err := exec.Command(py, "-c", "import "+c.need).CombinedOutput(); err != nil {
					t.Skipf("dkimpy needs %s for %s: %s", c.need, c.ktype, out)
				}
			}
			dir := t.TempDir()
			newkey := exec.Command("dknewkey", "--ktype", c.ktype, "x")
			newkey.Dir = dir
			if out, err := newkey.CombinedOutput(); err != nil {
				t.Skipf("dknewkey --ktype %s: %v\n%s", c.ktype, err, out)
			}
			record, err := os.ReadFile(filepath.Join(dir, "x.dns"))
			if err != nil {
				t.Fatal(err)
			}
			sign := exec.Command("dkimsign", "--signalg", c.signalg, "s1", "x.test", filepath.Join(dir, "x.key"))
			sign.Stdin = strings.NewReader(signedMsg("someone@x.test", "alice@c.test", "dkimsign "+c.ktype))
			var stderr bytes.Buffer
			sign.Stderr = &stderr
			signed, err := sign.Output()
			if err != nil || !bytes.HasPrefix(signed, []byte("DKIM-Signature: ")) {
				t.Fatalf("dkimsign: %v\n%s\n%s", err, stderr.Bytes(), signed)
			}

			cn := newNode(t, "c", "127.0.0.76")
			cn.cfg.DKIM.Keys = map[string]string{"s1._domainkey.x.test": strings.TrimSpace(string(record))}
			cn.start()
			if _, err := sendOne(cn.addr, "someone@x.test", "alice@c.test", string(signed)); err != nil {
				t.Fatal(err)
			}
			msg := waitMessage(t, cn, "alice")
			want := regexp.MustCompile(`Authentication-Results: c\.test;\r\n\tdkim=pass header\.d=x\.test (header\.i=@x\.test )?header\.s=s1 header\.a=` + c.signalg)
			if !want.MatchString(msg) {
				t.Errorf("C's copy does not match\n%s\n:\n%s", want, msg)
			}
		})
	}
}

// TestDKIMVerifyCommand: `relay dkim verify` prints a verdict per
// signature with the keys of the config and exits 1 unless all pass.
func TestDKIMVerifyCommand(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "k.pem")
	out, err := exec.Command(relayBinary(t), "dkim", "keygen", "--domain", "a.test", "--selector", "s1", "--algorithm", "rsa", "--out", keyFile).Output()
	if err != nil {
		t.Fatal(err)
	}
	m := keygenRE.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("keygen printed %q", out)
	}
	var record string
	for _, s := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(m[2], -1) {
		record += s[1]
	}
	cfgFile := filepath.Join(dir, "relay.toml")
	if err := os.WriteFile(cfgFile, []byte("hostname = \"c.test\"\n[dkim.keys]\n\"s1._domainkey.a.test\" = \""+record+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := dkim.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := (&dkim.Signer{Domain: "a.test", Keys: []dkim.Key{{Selector: "s1", Signer: key}}}).Sign([]byte(signedMsg("sender@a.test", "alice@c.test", "by hand")))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, msg, want string
		ok              bool
	}{
		{"intact", string(signed), "dkim=pass header.d=a.test header.s=s1 header.a=rsa-sha256 ", true},
		{"LF line endings", strings.ReplaceAll(string(signed), "\r\n", "\n"), "dkim=pass header.d=a.test ", true},
		{"changed", strings.Replace(string(signed), "The original", "The 0riginal", 1), `dkim=fail reason="body hash did not verify" header.d=a.test `, false},
		{"unsigned", signedMsg("sender@a.test", "alice@c.test", "by hand"), "dkim=none", false},
	} {
		cmd := exec.Command(relayBinary(t), "dkim", "verify", "--config", cfgFile)
		cmd.Stdin = strings.NewReader(c.msg)
		out, err := cmd.Output()
		if !strings.HasPrefix(string(out), c.want) || (err == nil) != c.ok {
			t.Errorf("%s: relay dkim verify printed %q, exit %v; want %q, success %v", c.name, out, err, c.want, c.ok)
		}
	}
}
