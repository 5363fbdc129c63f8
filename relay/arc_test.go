package relay

import (
	"bytes"
	"context"
	"crypto/rsa"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/relay-mta/relay/dkim"
	"github.com/relay-mta/relay/internal/dkimpy"
	"github.com/relay-mta/relay/relay/config"
	"github.com/relay-mta/relay/relay/smtpd/smtptest"
	"github.com/relay-mta/relay/spool"
)

// arcRelay is testConfig for a relay named host on addr (127.0.29.x)
// that seals with an RSA key of its own for domain host, selector "arc".
func arcRelay(t *testing.T, host, addr string) (*config.Config, *rsa.PrivateKey) {
	t.Helper()
	cfg := testConfig(t)
	cfg.Hostname = host
	cfg.LocalDomains = []string{host}
	cfg.SMTP.Listen = []string{addr + ":0"}
	k, path := newKey(t, t.TempDir(), dkim.RSA)
	cfg.ARC.Sign = []config.DKIMSign{{Domain: host, Selector: "arc", Key: path}}
	return cfg, k.(*rsa.PrivateKey)
}

// queuedIDs lists the messages in r's spool.
func queuedIDs(t *testing.T, r *Relay) []string {
	var ids []string
	if err := r.spool.List(func(m *spool.Message) error { ids = append(ids, m.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestARCTwoHops: a message from outside passes through two of our
// relays, mx1 then mx2 (by hand-off); each seals it. What mx2 stores
// carries sets i=1 and i=2, the chain validates here and in dkimpy, and
// mx2's Authentication-Results records mx1's chain as passing.
func TestARCTwoHops(t *testing.T) {
	cfg2, k2 := arcRelay(t, "mx2.test", "127.0.29.2")
	cfg2.Routes = []config.Route{{Domain: "*", To: "127.0.29.9:1", Host: "127.0.29.9", Port: 1, TLS: config.TLSNone}} // kept queued
	cfg2.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}                                         // mx1 is one of ours
	cfg1, k1 := arcRelay(t, "mx1.test", "127.0.29.1")
	keys := map[string]string{"arc._domainkey.mx1.test": record(t, k1), "arc._domainkey.mx2.test": record(t, k2)}
	cfg1.DKIM.Keys, cfg2.DKIM.Keys = keys, keys

	r2, stop2 := launch(t, cfg2, Options{}, nil)
	addr2 := r2.SMTPAddrs()[0]
	host, port, _ := strings.Cut(addr2, ":")
	p, _ := strconv.Atoi(port)
	cfg1.Routes = []config.Route{{Domain: "*", To: addr2, Host: host, Port: p, TLS: config.TLSNone}}
	r1, _ := launch(t, cfg1, Options{}, nil)

	c := smtptest.Dial(t, r1.SMTPAddrs()[0])
	c.Cmd("EHLO mx.a.test", "250 ")
	c.Send("<x@a.test>", []string{"<u@partner.test>"}, dkimMsg("x@a.test", "two hops"))
	waitUntil(t, "mx1 to hand the message to mx2", func() bool { return len(queuedIDs(t, r2)) == 1 })
	id := queuedIDs(t, r2)[0]
	stop2()

	msg := []byte(storedBodies(t, cfg2, id)[0])
	for _, want := range []string{
		"Authentication-Results: mx2.test;\r\n\tarc=pass (i=1 d=mx1.test)\r\n",
		"ARC-Seal: i=2; a=rsa-sha256; t=",
		"ARC-Authentication-Results: i=2; mx2.test;\r\n\tarc=pass (i=1 d=mx1.test)\r\n",
		"ARC-Seal: i=1; a=rsa-sha256; t=",
		"ARC-Authentication-Results: i=1; mx1.test;\r\n\tarc=none\r\n",
	} {
		if !bytes.Contains(msg, []byte(want)) {
			t.Errorf("message after two hops lacks %q:\n%s", want, msg)
		}
	}
	header, rest := splitAt(msg)
	res, err := (&dkim.Verifier{Keys: keys}).VerifyARC(context.Background(), header, func() (io.Reader, error) { return bytes.NewReader(rest), nil })
	if err != nil || res.Status != dkim.Pass || res.Instance != 2 {
		t.Errorf("our verdict on the chain of two hops: %+v, %v", res, err)
	}
	if v := dkimpy.ARCVerify(t, keys, msg); v[0] != "pass success" {
		t.Errorf("dkimpy on the chain of two hops: %q\n%s", v[0], msg)
	}
}

// TestARCVerdictOnReceipt: a relay records its verdict on the chains
// it receives: one sealed by dkimpy's arcsign passes, the same with the
// body changed fails. The client is trusted and sends no hand-off
// token, so the relay originates the mail and does not seal it.
func TestARCVerdictOnReceipt(t *testing.T) {
	cfg, _ := arcRelay(t, "mx2.test", "127.0.29.4")
	cfg.Routes = []config.Route{{Domain: "*", To: "127.0.29.9:1", Host: "127.0.29.9", Port: 1, TLS: config.TLSNone}}
	cfg.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	py, _ := newKey(t, t.TempDir(), dkim.RSA)
	cfg.DKIM.Keys = map[string]string{"py._domainkey.py.test": record(t, py)}
	msg := []byte("Authentication-Results: mx.py.test; dkim=pass header.d=a.test\r\n" + dkimMsg("x@a.test", "dkimpy sealed"))
	msg = dkimpy.ARCSign(t, msg, "py", "py.test", py.(*rsa.PrivateKey), "mx.py.test")

	addr, stop := runRelay(t, cfg)
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO mx.a.test", "250 ")
	ids := []string{
		c.Send("<x@a.test>", []string{"<u@partner.test>"}, string(msg)),
		c.Send("<x@a.test>", []string{"<u@partner.test>"}, string(bytes.Replace(msg, []byte("body of"), []byte("body 0f"), 1))),
	}
	stop()
	got := storedBodies(t, cfg, ids...)
	for i, want := range []string{
		"Authentication-Results: mx2.test;\r\n\tarc=pass (i=1 d=py.test)\r\nARC-Seal: i=1; cv=none; a=rsa-sha256; d=py.test;",
		"Authentication-Results: mx2.test;\r\n\tarc=fail reason=\"ARC-Message-Signature i=1: body hash did not verify\" (i=1 d=py.test)\r\nARC-Seal: i=1; cv=none; a=rsa-sha256; d=py.test;",
	} {
		if !strings.HasPrefix(got[i], want) {
			t.Errorf("message %d stored as\n%s\nwant it to start with\n%s", i, got[i], want)
		}
	}
}

// splitAt splits a message after the empty line that ends its header.
func splitAt(msg []byte) ([]byte, []byte) {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+4], msg[i+4:]
	}
	return msg, nil
}

// TestARCKeyMustBeRSA: an ed25519 [[arc.sign]] key would make seals no
// verifier accepts; the relay does not start with one.
func TestARCKeyMustBeRSA(t *testing.T) {
	cfg := testConfig(t)
	cfg.SMTP.Listen = []string{"127.0.29.3:0"}
	_, path := newKey(t, t.TempDir(), dkim.Ed25519)
	cfg.ARC.Sign = []config.DKIMSign{{Domain: "b.test", Selector: "arc", Key: path}}
	_, err := New(cfg, Options{})
	if err == nil || !strings.Contains(err.Error(), "arc.sign[0].key") || !strings.Contains(err.Error(), "ARC seals need an rsa key") {
		t.Fatalf("New with an ed25519 ARC key: %v", err)
	}
}

// TestARCSealsWhatPassesThrough: mail from outside is sealed with the
// chain's status as cv=; a chain whose key lookup fails for now is
// deferred rather than sealed as failed.
func TestARCSealsWhatPassesThrough(t *testing.T) {
	k, _ := newKey(t, t.TempDir(), dkim.RSA)
	dns := &txtResolver{records: map[string]string{"good._domainkey.a.test": record(t, k)}}
	cfg, _ := arcRelay(t, "mx2.test", "127.0.29.5")
	cfg.Routes = []config.Route{{Domain: "*", To: "127.0.29.9:1", Host: "127.0.29.9", Port: 1, TLS: config.TLSNone}}
	sealed := func(selector string) string {
		msg := []byte(dkimMsg("x@a.test", selector))
		s := &dkim.Sealer{Domain: "a.test", Key: dkim.Key{Selector: selector, Signer: k}}
		set, err := s.Seal(msg, dkim.ARCResult{Status: dkim.None}, "mx.a.test", nil)
		if err != nil {
			t.Fatal(err)
		}
		return string(set) + string(msg)
	}
	addr, stop := runRelayOpts(t, cfg, Options{Resolver: dns})
	c := smtptest.Dial(t, addr)
	c.Cmd("EHLO mx.a.test", "250 ")
	ids := []string{
		c.Send("<x@a.test>", []string{"<u@partner.test>"}, sealed("good")),
		c.Send("<x@a.test>", []string{"<u@partner.test>"}, sealed("missing")),
	}
	c.Cmd("MAIL FROM:<x@a.test>", "250 ")
	c.Cmd("RCPT TO:<u@partner.test>", "250 ")
	c.Cmd("DATA", "354 ")
	c.Cmd(sealed("servfail")+".", "451 4.4.3 ")
	stop()

	got := storedBodies(t, cfg, ids...)
	for i, want := range []string{
		"Authentication-Results: mx2.test;\r\n\tarc=pass (i=1 d=a.test)\r\nARC-Seal: i=2; a=rsa-sha256; t=",
		"Authentication-Results: mx2.test;\r\n\tarc=fail reason=\"ARC-Message-Signature i=1: no key record at missing._domainkey.a.test\" (i=1 d=a.test)\r\nARC-Seal: i=2; a=rsa-sha256; t=",
	} {
		if !strings.HasPrefix(got[i], want) {
			t.Errorf("message %d stored as\n%s\nwant it to start with\n%s", i, got[i], want)
		}
	}
	if !strings.Contains(got[0], "cv=pass;") || !strings.Contains(got[1], "cv=fail;") {
		t.Errorf("seals do not record the chains' status:\n%s\n%s", got[0], got[1])
	}
}
