package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writePair writes a self-signed certificate and its key as PEM files.
func writePair(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rqd-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestRQDTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePair(t, dir)
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(args ...string) (Config, error) {
		return Load("run", args, func(string) string { return "" }, nil, nil)
	}

	c, err := load()
	if err != nil {
		t.Fatal(err)
	}
	if tc, err := c.RQDTLS(); err != nil || tc != nil {
		t.Errorf("no settings: TLS %v, %v; want plaintext", tc, err)
	}

	c, err = load("--rqd-tls-ca", cert, "--rqd-tls-cert", cert, "--rqd-tls-key", key)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := c.RQDTLS()
	if err != nil || tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 {
		t.Fatalf("CA and client pair: %+v, %v", tc, err)
	}

	for _, tc := range []struct {
		name    string
		args    []string
		setting string
		atLoad  bool
	}{
		{"a certificate without its key", []string{"--rqd-tls-ca", cert, "--rqd-tls-cert", cert}, "rqd-tls-cert", true},
		{"a client pair without a CA", []string{"--rqd-tls-cert", cert, "--rqd-tls-key", key}, "rqd-tls-cert", true},
		{"a missing CA file", []string{"--rqd-tls-ca", filepath.Join(dir, "none.pem")}, "rqd-tls-ca", false},
		{"a CA file with no certificate", []string{"--rqd-tls-ca", junk}, "rqd-tls-ca", false},
		{"a key that is not a key", []string{"--rqd-tls-ca", cert, "--rqd-tls-cert", cert, "--rqd-tls-key", junk}, "rqd-tls-cert", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(tc.args...)
			if !tc.atLoad {
				if err != nil {
					t.Fatal(err)
				}
				_, err = c.RQDTLS()
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Setting != tc.setting {
				t.Fatalf("error %v, want a configuration error of --%s", err, tc.setting)
			}
		})
	}
}
