package pki

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"
)

// A trust bundle of two CAs: each once, in order; the chain a host sends
// ends in the CA that signed its certificate (what a join token pins),
// whichever comes first in the bundle.
func TestBundleAndIssuer(t *testing.T) {
	now := time.Now()
	oldCA, err := NewCA("c", now)
	if err != nil {
		t.Fatal(err)
	}
	newCA, err := NewCA("c", now)
	if err != nil {
		t.Fatal(err)
	}
	b := Bundle(newCA.CertPEM, oldCA.CertPEM, newCA.CertPEM)
	cas, err := ParseCerts(b)
	if err != nil || len(cas) != 2 || Fingerprint(cas[0]) != Fingerprint(newCA.Cert) || Fingerprint(cas[1]) != Fingerprint(oldCA.Cert) {
		t.Fatalf("bundle: %d CAs, %v", len(cas), err)
	}
	if _, err := ParseCerts([]byte("junk")); err == nil {
		t.Error("a bundle without certificates parsed")
	}
	certPEM, keyPEM, err := oldCA.IssueNode("n1", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := ParseCert(certPEM)
	if ca := IssuerIn(b, leaf); ca == nil || Fingerprint(ca) != Fingerprint(oldCA.Cert) {
		t.Fatalf("issuer of a certificate of the old CA: %v", ca)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	WithIssuer(&pair, b)
	if len(pair.Certificate) != 2 || string(pair.Certificate[1]) != string(oldCA.Cert.Raw) {
		t.Fatalf("chain of %d certificates, want the leaf and the old CA", len(pair.Certificate))
	}
	// The old CA's pin accepts the chain, the new CA's refuses it.
	raw := pair.Certificate
	if err := PinnedTLS(Fingerprint(oldCA.Cert)[:16]).VerifyPeerCertificate(raw, nil); err != nil {
		t.Errorf("old pin: %v", err)
	}
	if err := PinnedTLS(Fingerprint(newCA.Cert)[:16]).VerifyPeerCertificate(raw, nil); err == nil {
		t.Error("the new CA's pin accepted a chain of the old CA")
	}
	// A server with the bundle takes client certificates of both CAs.
	cfg, err := ServerTLS(b, certPEM, keyPEM, true)
	if err != nil {
		t.Fatal(err)
	}
	newLeafPEM, _, err := newCA.IssueNode("n2", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{certPEM, newLeafPEM} {
		c, _ := ParseCert(p)
		if _, err := c.Verify(x509VerifyOpts(cfg)); err != nil {
			t.Errorf("client certificate of %s refused: %v", c.Issuer.CommonName, err)
		}
	}
}

func x509VerifyOpts(cfg *tls.Config) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: cfg.ClientCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
}
