package relay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// certHolder serves the current server certificate to every TLS
// handshake, so that ReloadTLS can replace it (SIGHUP) without a restart
// and without touching connections already made.
type certHolder struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

func newCertHolder(certFile, keyFile string) (*certHolder, error) {
	h := &certHolder{certFile: certFile, keyFile: keyFile}
	if err := h.reload(); err != nil {
		return nil, err
	}
	return h, nil
}

// reload reads the files again; on error the certificate in use stays.
func (h *certHolder) reload() error {
	cert, err := tls.LoadX509KeyPair(h.certFile, h.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s: %w", h.certFile, err)
	}
	h.cert.Store(&cert)
	return nil
}

// config is the server TLS configuration: TLS 1.2 at least (docs/design.md §12).
func (h *certHolder) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return h.cert.Load(), nil
		},
	}
}

// ReloadTLS re-reads [tls] cert and key; the certificate in use stays when
// the new files cannot be loaded.
func (r *Relay) ReloadTLS() error {
	if r.certs == nil {
		return nil
	}
	if err := r.certs.reload(); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	return nil
}

// WriteSelfSigned creates a self-signed certificate for hostname (and the
// loopback addresses) under dir/tls and returns the paths of the PEM
// certificate and key. It is for test setups: relay serve --self-signed
// says so loudly, and no peer that verifies certificates will accept it.
func WriteSelfSigned(dir, hostname string) (certFile, keyFile string, err error) {
	tlsDir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(tlsDir, "self-signed.crt"), filepath.Join(tlsDir, "self-signed.key")
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		return certFile, keyFile, nil // made by an earlier run: keep it
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hostname},
		DNSNames:     []string{hostname},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
