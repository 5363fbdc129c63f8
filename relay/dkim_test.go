package relay

import (
	"context"
	"crypto"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/dkim"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/smtpd/smtptest"
	"github.com/relay-mta/relay/spool"
)

// dkimMsg is a message from the given author with the fields a signature
// covers.
func dkimMsg(from, subject string) string {
	return "From: " + from + "\r\nTo: u@partner.test\r\nSubject: " + subject +
		"\r\nDate: Sat, 21 Nov 2026 09:00:00 +0000\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@test>\r\n\r\nbody of " + subject + "\r\n"
}

// newKey writes a fresh key to dir and returns it with its path.
func newKey(t *testing.T, dir string, alg dkim.Algorithm) (crypto.Signer, string) {
	t.Helper()
	k, err := dkim.GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, string(alg)+"-"+filepath.Base(t.Name())+".pem")
	if err := dkim.WriteKey(path, k); err != nil {
		t.Fatal(err)
	}
	return k, path
}

func record(t *testing.T, k crypto.Signer) string {
	t.Helper()
	rec, err := dkim.TXTValue(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// queuedConfig is testConfig with all outgoing mail kept in the queue (the
// route goes to a closed port), so a test reads what the relay stored.
func queuedConfig(t *testing.T) *config.Config {
	cfg := testConfig(t)
	cfg.Routes = []config.Route{{Domain: "*", To: "127.0.0.1:1", Host: "127.0.0.1", Port: 1, TLS: config.TLSNone}}
	return cfg
}

// runRelayOpts is runRelay with options (a resolver).
func runRelayOpts(t *testing.T, cfg *config.Config, opts Options) (string, func()) {
	t.Helper()
	r, stop := launch(t, cfg, opts, nil)
	return r.SMTPAddrs()[0], stop
}

// storedBodies opens the spool of a stopped relay and returns the stored
// message of each ID, without our Received field.
func storedBodies(t *testing.T, cfg *config.Config, ids ...string) []string {
	t.Helper()
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(cfg.DataDir, "spool"), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	var out []string
	for _, id := range ids {
		b, err := sp.Body(id)
		if err != nil {
			t.Fatalf("message %s: %v", id, err)
		}
		s := string(b)
		if !strings.HasPrefix(s, "Received: ") {
			t.Fatalf("message %s does not start with our Received field:\n%s", id, s)
		}
		// Our Received field is three or four lines; skip to the first
		// field that is not its continuation.
		i := strings.Index(s, "\r\n")
		for strings.HasPrefix(s[i+2:], "\t") {
			i += 2 + strings.Index(s[i+2:], "\r\n")
		}
		out = append(out, s[i+2:])
	}
	return out
}

func verifyStored(t *testing.T, msg string, keys map[string]string) []dkim.Result {
	t.Helper()
	res, err := (&dkim.Verifier{Keys: keys, Resolver: notFound{}}).Verify(context.Background(), []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// notFound is a DNS where no key exists.
type notFound struct{}

func (notFound) LookupTXT(_ context.Context, name string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// TestDKIMSignsWhatItOriginates: mail from a relay client with a From
// domain that has a key is signed once, at acceptance, and the stored copy
// verifies; other mail is stored as sent.
func TestDKIMSignsWhatItOriginates(t *testing.T) {
	cfg := queuedConfig(t)
	cfg.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.DKIM.Verify = false // only signing here
	k, path := newKey(t, cfg.DataDir, dkim.Ed25519)
	cfg.DKIM.Sign = []config.DKIMSign{{Domain: "b.test", Selector: "s1", Key: path}}
	keys := map[string]string{"s1._domainkey.b.test": record(t, k)}
	presigned, err := (&dkim.Signer{Domain: "b.test", Keys: []dkim.Key{{Selector: "s1", Signer: k}}}).Sign([]byte(dkimMsg("x@b.test", "already signed")))
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := runRelay(t, cfg)
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO inside.test", "250 ")
	signedID := c.Send("<x@b.test>", []string{"<u@partner.test>"}, dkimMsg("Xavier <x@B.test>", "ours"))
	otherID := c.Send("<x@other.test>", []string{"<u@partner.test>"}, dkimMsg("x@other.test", "not ours"))
	handoffID := c.Send("<x@b.test>", []string{"<u@partner.test>"}, "X-Relay-Handoff: a.test 001ABCDEFGHJK\r\n"+dkimMsg("x@b.test", "handed over"))
	presignedID := c.Send("<x@b.test>", []string{"<u@partner.test>"}, string(presigned))
	stop()

	got := storedBodies(t, cfg, signedID, otherID, handoffID, presignedID)
	if !strings.HasPrefix(got[0], "DKIM-Signature: ") || !strings.HasSuffix(got[0], dkimMsg("Xavier <x@B.test>", "ours")) {
		t.Errorf("mail from b.test stored without a signature in front:\n%s", got[0])
	}
	if res := verifyStored(t, got[0], keys); len(res) != 1 || res[0].Status != dkim.Pass || res[0].Domain != "b.test" {
		t.Errorf("stored signature: %+v, want one pass for b.test", res)
	}
	if got[1] != dkimMsg("x@other.test", "not ours") {
		t.Errorf("mail from a domain without a key changed:\n%s", got[1])
	}
	if got[2] != dkimMsg("x@b.test", "handed over") {
		t.Errorf("mail handed over by another of our relays signed again:\n%s", got[2])
	}
	if got[3] != string(presigned) {
		t.Errorf("mail already signed by b.test signed again:\n%s", got[3])
	}
}

// TestDKIMSignsOnlyForRelayClients: an outsider writing "From: x@b.test"
// does not get our signature; the same user authenticated does.
func TestDKIMSignsOnlyForRelayClients(t *testing.T) {
	cfg := queuedConfig(t)
	cfg.AllowInsecureAuth = true
	_, path := newKey(t, cfg.DataDir, dkim.RSA)
	cfg.DKIM.Sign = []config.DKIMSign{{Domain: "b.test", Selector: "s1", Key: path}}
	addr, stop := runRelay(t, cfg)
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO outside.test", "250 ")
	// partner.test is a relay domain: outsiders may send there.
	outsiderID := c.Send("<x@b.test>", []string{"<u@partner.test>"}, dkimMsg("x@b.test", "outsider"))
	c.Cmd("AUTH PLAIN AGFsaWNlAHB3LWFsaWNl", "235 2.7.0") // alice / pw-alice
	authID := c.Send("<alice@b.test>", []string{"<u@partner.test>"}, dkimMsg("alice@b.test", "authenticated"))
	stop()
	got := storedBodies(t, cfg, outsiderID, authID)
	if got[0] != dkimMsg("x@b.test", "outsider") {
		t.Errorf("message from an outsider changed:\n%s", got[0])
	}
	if !strings.HasPrefix(got[1], "DKIM-Signature: a=rsa-sha256;") {
		t.Errorf("message from an authenticated user not signed:\n%s", got[1])
	}
}

// TestDKIMVerifiesOnReceipt: signed mail gets an Authentication-Results
// field from us right under our Received field; unsigned mail gets none;
// fields forged in our name are removed; failures of reject_failures
// domains are refused.
func TestDKIMVerifiesOnReceipt(t *testing.T) {
	cfg := queuedConfig(t)
	dir := t.TempDir()
	ka, _ := newKey(t, dir, dkim.Ed25519)
	kb, _ := newKey(t, dir, dkim.RSA)
	cfg.DKIM.Keys = map[string]string{"s1._domainkey.a.test": record(t, ka), "s1._domainkey.bank.test": record(t, kb)}
	cfg.DKIM.RejectFailures = []string{"bank.test"}
	signA := &dkim.Signer{Domain: "a.test", Keys: []dkim.Key{{Selector: "s1", Signer: ka}}}
	signBank := &dkim.Signer{Domain: "bank.test", Keys: []dkim.Key{{Selector: "s1", Signer: kb}}}
	signed := func(s *dkim.Signer, msg string) string {
		b, err := s.Sign([]byte(msg))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tamper := func(msg string) string { return strings.Replace(msg, "body of", "body 0f", 1) }

	addr, stop := runRelay(t, cfg)
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO mx.a.test", "250 ")
	ids := []string{
		c.Send("<x@a.test>", []string{"<u@partner.test>"}, signed(signA, dkimMsg("x@a.test", "intact"))),
		c.Send("<x@a.test>", []string{"<u@partner.test>"}, tamper(signed(signA, dkimMsg("x@a.test", "tampered")))),
		c.Send("<x@a.test>", []string{"<u@partner.test>"}, dkimMsg("x@a.test", "unsigned")),
		c.Send("<x@a.test>", []string{"<u@partner.test>"}, "Authentication-Results: B.TEST; dkim=pass header.d=bank.test\r\n"+
			"Authentication-Results: mx.a.test; spf=pass\r\n"+dkimMsg("x@bank.test", "forged")),
		c.Send("<x@bank.test>", []string{"<u@partner.test>"}, signed(signBank, dkimMsg("x@bank.test", "bank intact"))),
	}
	c.Cmd("MAIL FROM:<x@bank.test>", "250 ")
	c.Cmd("RCPT TO:<u@partner.test>", "250 ")
	c.Cmd("DATA", "354 ")
	c.Cmd(tamper(signed(signBank, dkimMsg("x@bank.test", "bank tampered")))+".", "550 5.7.20 ")
	stop()

	got := storedBodies(t, cfg, ids...)
	for i, want := range []string{
		"Authentication-Results: b.test;\r\n\tdkim=pass header.d=a.test header.s=s1 header.a=ed25519-sha256 header.b=",
		"Authentication-Results: b.test;\r\n\tdkim=fail reason=\"body hash did not verify\" header.d=a.test header.s=s1 header.a=ed25519-sha256 header.b=",
		dkimMsg("x@a.test", "unsigned"),
		"Authentication-Results: mx.a.test; spf=pass\r\n" + dkimMsg("x@bank.test", "forged"),
		"Authentication-Results: b.test;\r\n\tdkim=pass header.d=bank.test header.s=s1 header.a=rsa-sha256 header.b=",
	} {
		if !strings.HasPrefix(got[i], want) {
			t.Errorf("message %d stored as\n%s\nwant it to start with\n%s", i, got[i], want)
		}
		if n := strings.Count(got[i], "Authentication-Results: b.test"); n > 1 {
			t.Errorf("message %d has %d Authentication-Results of ours", i, n)
		}
	}
}

// TestDKIMKeyLookupThroughResolver: keys not in [dkim.keys] come from the
// resolver; a temporary failure there is temperror, an unknown key
// permerror.
func TestDKIMKeyLookupThroughResolver(t *testing.T) {
	k, _ := newKey(t, t.TempDir(), dkim.Ed25519)
	dns := &txtResolver{records: map[string]string{"good._domainkey.a.test": record(t, k)}}
	cfg := queuedConfig(t)
	addr, stop := runRelayOpts(t, cfg, Options{Resolver: dns})
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO mx.a.test", "250 ")
	var ids []string
	for _, sel := range []string{"good", "servfail", "missing"} {
		s := &dkim.Signer{Domain: "a.test", Keys: []dkim.Key{{Selector: sel, Signer: k}}}
		msg, err := s.Sign([]byte(dkimMsg("x@a.test", sel)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.Send("<x@a.test>", []string{"<u@partner.test>"}, string(msg)))
	}
	stop()
	got := storedBodies(t, cfg, ids...)
	for i, want := range []string{"dkim=pass ", "dkim=temperror ", "dkim=permerror "} {
		if !strings.HasPrefix(got[i], "Authentication-Results: b.test;\r\n\t"+want) {
			t.Errorf("message %d:\n%s\nwant %s", i, got[i], want)
		}
	}
}

// txtResolver is a Resolver with LookupTXT: names starting "servfail."
// fail temporarily, names it does not know do not exist.
type txtResolver struct {
	notFound
	records map[string]string
}

func (r *txtResolver) LookupMX(context.Context, string) ([]*net.MX, error) { return nil, nil }
func (r *txtResolver) LookupHost(context.Context, string) ([]string, error) {
	return nil, nil
}
func (r *txtResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if strings.HasPrefix(name, "servfail.") {
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	if rec, ok := r.records[name]; ok {
		return []string{rec}, nil
	}
	return r.notFound.LookupTXT(ctx, name)
}

// TestDKIMBadKeyStopsStart: a key file that cannot be used is a start-up
// error naming the file, not unsigned mail.
func TestDKIMBadKeyStopsStart(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("-----BEGIN NOTHING-----\n"), 0o600)
	for _, path := range []string{garbage, filepath.Join(dir, "missing.pem")} {
		cfg := testConfig(t)
		cfg.DKIM.Sign = []config.DKIMSign{{Domain: "b.test", Selector: "s1", Key: path}}
		r, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err == nil {
			r.Spool().Close()
			t.Fatalf("relay started with key file %s", path)
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "dkim.sign") {
			t.Errorf("error %q does not name the file and the setting", err)
		}
	}
}

// TestDKIMSignerForDSNs: the signer of a domain is there for the code that
// writes DSNs.
func TestDKIMSignerForDSNs(t *testing.T) {
	cfg := testConfig(t)
	_, path := newKey(t, cfg.DataDir, dkim.Ed25519)
	cfg.DKIM.Sign = []config.DKIMSign{{Domain: "b.test", Selector: "s1", Key: path}}
	r, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Spool().Close()
	s := r.DKIMSigner("B.test.")
	if s == nil || s.Domain != "b.test" || len(s.Keys) != 1 || s.Keys[0].Selector != "s1" {
		t.Fatalf("DKIMSigner(b.test) = %+v", s)
	}
	if r.DKIMSigner("other.test") != nil {
		t.Error("a signer for a domain without a key")
	}
	signed, err := s.Sign([]byte(dkimMsg("MAILER-DAEMON@b.test", "bounce")))
	if err != nil || !strings.HasPrefix(string(signed), "DKIM-Signature: ") {
		t.Errorf("Sign: %v\n%s", err, signed)
	}
}

// TestDSNsAreSigned: a bounce from this relay carries a DKIM signature of
// its hostname's domain.
func TestDSNsAreSigned(t *testing.T) {
	cfg := testConfig(t)
	cfg.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	_, path := newKey(t, cfg.DataDir, dkim.Ed25519)
	cfg.DKIM.Sign = []config.DKIMSign{{Domain: "b.test", Selector: "s1", Key: path}}
	r, _ := launch(t, cfg, Options{Resolver: nxResolver{}}, nil)
	c := smtptest.Dial(t, r.SMTPAddrs()[0])
	c.Cmd("EHLO b.test", "250 ")
	c.Send("<alice@b.test>", []string{"<u@nowhere.test>"}, "Subject: will bounce\r\n\r\nx\r\n")
	var dsn []byte
	for deadline := time.Now().Add(10 * time.Second); dsn == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if box, _ := r.Spool().Mailbox("alice"); len(box) > 0 {
			dsn, _ = r.Spool().MailboxMessage("alice", box[0].Seq)
		}
	}
	if dsn == nil {
		t.Fatal("no DSN for alice")
	}
	if !strings.Contains(string(dsn), "\r\nDKIM-Signature: ") || !strings.Contains(string(dsn), "d=b.test") {
		t.Fatalf("DSN not signed by b.test:\n%s", dsn[:min(len(dsn), 600)])
	}
}

// nxResolver answers NXDOMAIN for every name.
type nxResolver struct{}

func (nxResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (nxResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}
