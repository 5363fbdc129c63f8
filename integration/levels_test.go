package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/client"
	"github.com/relay-mta/relay/envelope"
	"github.com/relay-mta/relay/spool"
)

// withTestCert gives n a self-signed certificate for its hostname and ip,
// so that it offers STARTTLS.
func withTestCert(t *testing.T, n *node, ip string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: n.cfg.Hostname},
		DNSNames:     []string{n.cfg.Hostname},
		IPAddresses:  []net.IP{net.ParseIP(ip)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	n.cfg.TLS.Cert = filepath.Join(n.cfg.DataDir, "cert.pem")
	n.cfg.TLS.Key = filepath.Join(n.cfg.DataDir, "key.pem")
	if err := os.WriteFile(n.cfg.TLS.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.cfg.TLS.Key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestREQUIRETLSNeverInClear: a message sent with REQUIRETLS over TLS to
// A, whose only way to B is plaintext, is not delivered to B; its sender
// gets exactly one failure DSN with status 5.7.30 (RFC 8689 §5).
func TestREQUIRETLSNeverInClear(t *testing.T) {
	a, b := newNode(t, "a", "127.0.0.193"), newNode(t, "b", "127.0.0.194")
	withTestCert(t, a, "127.0.0.193")
	b.start()
	a.route("b.test", b.addr)
	a.start()

	// As relay send --starttls --require-tls does it.
	from, _ := envelope.ParseReversePath("<alice@a.test>", false)
	to, _ := envelope.ParseForwardPath("<bob@b.test>", false)
	opts := client.SubmitOptions{Addr: a.addr, StartTLS: true, TLSConfig: &tls.Config{InsecureSkipVerify: true}, RequireTLS: true, LocalName: "client.test"}
	if _, _, err := client.Submit(context.Background(), opts, from, []envelope.Path{to}, []byte("Subject: secret\r\n\r\nfor TLS only\r\n")); err != nil {
		t.Fatal(err)
	}

	waitFor(t, 20*time.Second, "a DSN in alice's mailbox at A", func() bool { return len(a.mailboxRaw("alice")) >= 1 })
	time.Sleep(500 * time.Millisecond) // room for a second DSN, which would be a bug
	boxes := a.mailboxRaw("alice")
	if len(boxes) != 1 {
		t.Fatalf("%d messages for the sender, want one DSN", len(boxes))
	}
	raw := boxes[0]
	raw = raw[bytes.Index(raw, []byte("\r\nFrom: "))+2:]
	_, perRcpt, _ := statusFields(t, raw)
	if got := perRcpt.Get("Status"); got != "5.7.30" {
		t.Errorf("Status = %q, want 5.7.30", got)
	}
	if got := perRcpt.Get("Action"); got != "failed" {
		t.Errorf("Action = %q, want failed", got)
	}
	if got := perRcpt.Get("Diagnostic-Code"); !strings.Contains(got, "REQUIRETLS") {
		t.Errorf("Diagnostic-Code = %q", got)
	}
	if got := b.mailbox("bob"); len(got) != 0 {
		t.Errorf("B delivered %q in the clear", got)
	}
}

// TestLevelsPassedAcrossRelays: a trusted client gives A a message with
// MT-PRIORITY=6 and BY=600;R; B, behind which the way on is cut, holds it
// with the priority and the BY time A passed on, less the time spent at A.
func TestLevelsPassedAcrossRelays(t *testing.T) {
	a, b, c := newNode(t, "a", "127.0.0.196"), newNode(t, "b", "127.0.0.197"), newNode(t, "c", "127.0.0.198")
	c.start()
	bc := link(t, "127.0.0.198", c)
	bc.Cut()
	b.route("c.test", bc.Addr())
	b.start()
	a.route("c.test", b.addr)
	a.start()

	nc, err := net.Dial("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	tc := textproto.NewConn(nc)
	step := func(code int, format string, args ...any) {
		t.Helper()
		if format != "" {
			if err := tc.PrintfLine(format, args...); err != nil {
				t.Fatal(err)
			}
		}
		if _, msg, err := tc.ReadResponse(code); err != nil {
			t.Fatalf("%q: %v %s", format, err, msg)
		}
	}
	step(220, "")
	step(250, "EHLO client.test")
	step(250, "MAIL FROM:<alice@a.test> MT-PRIORITY=6 BY=600;R")
	step(250, "RCPT TO:<bob@c.test>")
	step(354, "DATA")
	step(250, "Subject: urgent\r\n\r\nsoon\r\n.")
	step(221, "QUIT")

	var got *spool.Message
	waitFor(t, 20*time.Second, "the message queued at B", func() bool {
		if q := b.queued(); len(q) == 1 {
			got = q[0]
			return true
		}
		return false
	})
	p, err := envelope.ParseMailParams(strings.TrimSpace(got.MailParams))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("B holds MAIL parameters %q", got.MailParams)
	if p.Priority != 6 || p.ByMode != envelope.ByReturn || p.ByTime >= 600 || p.ByTime < 590 {
		t.Errorf("B holds MT-PRIORITY=%d BY=%d;%s, want 6 and 590..599;R", p.Priority, p.ByTime, p.ByMode)
	}
}
