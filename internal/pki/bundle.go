package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
)

// A trust bundle is one or more CA certificates in PEM, one after the
// other: a host's DATA/pki/ca.crt holds the cluster CA, and both the old
// and the new one while the CA is rotated (haven ca rotate).

// ParseCerts parses every certificate of a PEM bundle; an error when it
// holds none or one does not parse.
func ParseCerts(bundlePEM []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, b := range certBlocks(bundlePEM) {
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

// certBlocks are the CERTIFICATE blocks of a PEM bundle.
func certBlocks(bundlePEM []byte) []*pem.Block {
	var out []*pem.Block
	rest := bundlePEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		if b.Type == "CERTIFICATE" {
			out = append(out, b)
		}
	}
}

// Bundle joins CA certificates (PEM) into one trust bundle, each once,
// in the order given.
func Bundle(certs ...[]byte) []byte {
	var out []byte
	seen := map[string]bool{}
	for _, c := range certs {
		for _, b := range certBlocks(c) {
			if !seen[string(b.Bytes)] {
				seen[string(b.Bytes)] = true
				out = append(out, pem.EncodeToMemory(&pem.Block{Type: b.Type, Bytes: b.Bytes})...)
			}
		}
	}
	return out
}

// IssuerIn is the certificate of bundlePEM that signed leaf, or nil.
func IssuerIn(bundlePEM []byte, leaf *x509.Certificate) *x509.Certificate {
	cas, err := ParseCerts(bundlePEM)
	if err != nil {
		return nil
	}
	for _, ca := range cas {
		if bytes.Equal(ca.RawSubject, leaf.RawIssuer) && leaf.CheckSignatureFrom(ca) == nil {
			return ca
		}
	}
	return nil
}

// Pool is a certificate pool of every certificate of a trust bundle.
func Pool(bundlePEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundlePEM) {
		return nil, errors.New("load cluster CA: no certificate")
	}
	return pool, nil
}

// WithIssuer appends to pair's chain the CA of bundlePEM that signed its
// certificate, so that a joining host can check it against its pin (the
// pin is the fingerprint of the chain's last certificate).
func WithIssuer(pair *tls.Certificate, bundlePEM []byte) {
	if len(pair.Certificate) == 0 {
		return
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return
	}
	if ca := IssuerIn(bundlePEM, leaf); ca != nil {
		pair.Certificate = append(pair.Certificate, ca.Raw)
	}
}
