package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// RQDTLS is the TLS configuration of calls to RQD the settings describe,
// nil for plaintext (RQD's default). Unreadable or malformed files are
// configuration errors naming the setting.
func (c Config) RQDTLS() (*tls.Config, error) {
	if c.RQDTLSCA == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(c.RQDTLSCA)
	if err != nil {
		return nil, &Error{Setting: "rqd-tls-ca", Err: err}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, &Error{Setting: "rqd-tls-ca", Err: fmt.Errorf("%s holds no PEM certificate", c.RQDTLSCA)}
	}
	tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if c.RQDTLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.RQDTLSCert, c.RQDTLSKey)
		if err != nil {
			return nil, &Error{Setting: "rqd-tls-cert", Err: errors.Join(
				fmt.Errorf("load %s with key %s", c.RQDTLSCert, c.RQDTLSKey), err)}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
