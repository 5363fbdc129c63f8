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
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relay-mta/relay/client"
	"github.com/relay-mta/relay/envelope"
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
