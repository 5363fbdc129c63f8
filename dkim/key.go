package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// Algorithm is a DKIM key type, the k= of a key record.
type Algorithm string

// The key types the relay signs with.
const (
	// Ed25519 keys (RFC 8463) are small and fast; not every verifier knows
	// them yet, which is why RFC 8463 suggests signing with RSA as well.
	Ed25519 Algorithm = "ed25519"
	// RSA keys (RFC 6376, RFC 8301) are understood everywhere.
	RSA Algorithm = "rsa"
)

// MinRSABits is the smallest RSA key the relay signs with. RFC 8301 §3.2
// lets verifiers accept 1024 bits, but asks signers for at least 2048.
const MinRSABits = 2048

// rsaBits is the size of generated RSA keys: the minimum, which still fits
// a DNS TXT record of two strings and is what large senders publish.
const rsaBits = 2048

// GenerateKey makes a new private key of type alg.
func GenerateKey(alg Algorithm) (crypto.Signer, error) {
	switch alg {
	case Ed25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("dkim: generate ed25519 key: %w", err)
		}
		return priv, nil
	case RSA:
		priv, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			return nil, fmt.Errorf("dkim: generate rsa key: %w", err)
		}
		return priv, nil
	}
	return nil, fmt.Errorf("dkim: unknown key algorithm %q (want ed25519 or rsa)", alg)
}

// KeyAlgorithm returns the type of key, or an error for a key DKIM cannot
// sign with (including RSA keys under MinRSABits).
func KeyAlgorithm(key crypto.Signer) (Algorithm, error) {
	switch pub := key.Public().(type) {
	case ed25519.PublicKey:
		return Ed25519, nil
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < MinRSABits {
			return "", fmt.Errorf("dkim: rsa key of %d bits is too short (at least %d)", bits, MinRSABits)
		}
		return RSA, nil
	}
	return "", fmt.Errorf("dkim: unsupported key type %T (want ed25519 or rsa)", key.Public())
}

// MarshalKey encodes key as a PEM "PRIVATE KEY" block (PKCS#8), the format
// LoadKey reads and openssl writes.
func MarshalKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("dkim: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey decodes a PEM private key: PKCS#8 ("PRIVATE KEY") holding an
// ed25519 or RSA key, or PKCS#1 ("RSA PRIVATE KEY", as older openssl and
// opendkim-genkey write). RSA keys must have at least MinRSABits.
func ParseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key (want PRIVATE KEY)", block.Type)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	if _, err := KeyAlgorithm(signer); err != nil {
		return nil, err
	}
	return signer, nil
}

// LoadKey reads a private key file; errors name the file.
func LoadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	key, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("dkim: key file %s: %w", path, err)
	}
	return key, nil
}

// WriteKey writes key to a new file at path, readable by its owner only
// (mode 0600). It refuses to replace an existing file: overwriting a key
// that is in use would break every signature until DNS catches up.
func WriteKey(path string, key crypto.Signer) error {
	data, err := MarshalKey(key)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("dkim: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("dkim: write %s: %w", path, err)
	}
	return nil
}
