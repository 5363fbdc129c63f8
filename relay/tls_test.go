package relay

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// peerSerial connects with STARTTLS and returns the serial number of the
// certificate the relay presented.
func peerSerial(t *testing.T, addr string) string {
	t.Helper()
	c, err := smtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Noop(); err != nil { // the handshake happens at the first command
		t.Fatal(err)
	}
	st, ok := c.TLSConnectionState()
	if !ok || st.Version < tls.VersionTLS12 {
		t.Fatalf("TLS state %v, %v", ok, st.Version)
	}
	return st.PeerCertificates[0].SerialNumber.String()
}

// TestTLSReload: ReloadTLS (what SIGHUP does) swaps the certificate for
// new connections; a bad file keeps the old one.
func TestTLSReload(t *testing.T) {
	cfg := testConfig(t)
	dir := t.TempDir()
	certA, keyA, err := WriteSelfSigned(filepath.Join(dir, "a"), "b.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS.Cert, cfg.TLS.Key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	copyFile(t, certA, cfg.TLS.Cert)
	copyFile(t, keyA, cfg.TLS.Key)
	cfg.SMTP.ListenTLS = []string{"127.0.0.1:0"}
	r, _ := launch(t, cfg, Options{}, nil)
	addr := r.SMTPAddrs()[0]
	first := peerSerial(t, addr)

	certB, keyB, err := WriteSelfSigned(filepath.Join(dir, "b"), "b.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, certB, cfg.TLS.Cert)
	copyFile(t, keyB, cfg.TLS.Key)
	if err := r.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	second := peerSerial(t, addr)
	if second == first {
		t.Fatal("the certificate did not change after ReloadTLS")
	}
	os.WriteFile(cfg.TLS.Cert, []byte("garbage"), 0o600)
	if err := r.ReloadTLS(); err == nil {
		t.Fatal("a broken certificate file was accepted")
	}
	if peerSerial(t, addr) != second {
		t.Fatal("a failed reload changed the certificate in use")
	}

	// The implicit-TLS listener (RFC 8314) speaks TLS from the first byte.
	tlsAddr := r.SMTPAddrs()[1]
	c, err := smtp.DialTLS(tlsAddr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("implicit TLS: %v", err)
	}
	c.Close()
	// TLS below 1.2 is refused.
	if nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", tlsAddr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}); err == nil {
		nc.Close()
		t.Fatal("TLS 1.1 accepted")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSelfSignedCoversListenAddresses: relay serve --self-signed makes a
// certificate valid for the hostname, loopback and every listen address
// (names too; wildcards add nothing), keeps it while it covers them, and
// makes a new one when a listen address is added.
func TestSelfSignedCoversListenAddresses(t *testing.T) {
	dir := t.TempDir()
	listen := []string{"127.0.24.40:2525", "[2001:db8::25]:25", "mail.b.test:587", "0.0.0.0:25", ":110"}
	load := func(certFile, keyFile string) *x509.Certificate {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return pair.Leaf
	}
	certFile, keyFile, err := WriteSelfSigned(dir, "b.test", listen)
	if err != nil {
		t.Fatal(err)
	}
	first := load(certFile, keyFile)
	for _, h := range []string{"b.test", "127.0.0.1", "::1", "127.0.24.40", "2001:db8::25", "mail.b.test"} {
		if err := first.VerifyHostname(h); err != nil {
			t.Errorf("the certificate does not cover %s: %v", h, err)
		}
	}
	if _, _, err := WriteSelfSigned(dir, "b.test", listen[:2]); err != nil {
		t.Fatal(err)
	}
	if again := load(certFile, keyFile); again.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Error("a certificate that covers every address was replaced")
	}
	if _, _, err := WriteSelfSigned(dir, "b.test", append(listen, "127.0.24.41:2525")); err != nil {
		t.Fatal(err)
	}
	if err := load(certFile, keyFile).VerifyHostname("127.0.24.41"); err != nil {
		t.Errorf("a new listen address is not covered: %v", err)
	}
}
