package relay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"

	"github.com/relay-mta/relay/relay/config"
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
		return &certLoadError{certFile: h.certFile, keyFile: h.keyFile, err: err}
	}
	h.cert.Store(&cert)
	return nil
}

// certLoadError is a certificate and key that could not be loaded.
type certLoadError struct {
	certFile, keyFile string
	err               error
}

func (e *certLoadError) Error() string {
	var pe *fs.PathError
	if errors.As(e.err, &pe) {
		return e.err.Error() // "open FILE: ...": names the file already
	}
	return fmt.Sprintf("certificate %s and key %s: %v", e.certFile, e.keyFile, e.err)
}

func (e *certLoadError) Unwrap() error { return e.err }

// certError says which key of the configuration, set where, names the
// file that failed: tls.key when the key file could not be read, tls.cert
// otherwise.
func certError(cfg *config.Config, err error) error {
	key := "tls.cert"
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == cfg.TLS.Key {
		key = "tls.key"
	}
	return cfg.KeyError(key, err)
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

// WriteSelfSigned creates a self-signed certificate for hostname, the
// loopback addresses and every address of listen (host:port, as in the
// [smtp] and [pop3] listen keys: an IP or a name; a wildcard address
// names nothing to add) under dir/tls and returns the paths of the PEM
// certificate and key. A certificate made earlier is kept when it covers
// them all. It is for test setups: relay serve --self-signed says so
// loudly, and no peer that verifies certificates will accept it.
func WriteSelfSigned(dir, hostname string, listen []string) (certFile, keyFile string, err error) {
	tlsDir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(tlsDir, "self-signed.crt"), filepath.Join(tlsDir, "self-signed.key")
	names, ips := selfSignedNames(hostname, listen)
	if pair, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil && covers(pair.Leaf, names, ips) {
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
		DNSNames:     names,
		IPAddresses:  ips,
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

// selfSignedNames are the names and addresses a self-signed certificate
// covers: hostname, 127.0.0.1 and ::1, and the hosts of listen.
func selfSignedNames(hostname string, listen []string) (names []string, ips []net.IP) {
	names = []string{hostname}
	ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, a := range listen {
		host, _, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			continue
		}
		ip := net.ParseIP(host)
		switch {
		case ip == nil:
			if !slices.Contains(names, host) {
				names = append(names, host)
			}
		case ip.IsUnspecified():
		case !slices.ContainsFunc(ips, ip.Equal):
			ips = append(ips, ip)
		}
	}
	return names, ips
}

// covers reports whether cert is valid for every one of names and ips.
func covers(cert *x509.Certificate, names []string, ips []net.IP) bool {
	if cert == nil {
		return false
	}
	for _, n := range names {
		if cert.VerifyHostname(n) != nil {
			return false
		}
	}
	for _, ip := range ips {
		if cert.VerifyHostname(ip.String()) != nil {
			return false
		}
	}
	return true
}
