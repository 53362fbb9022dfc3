// Package pki owns Haven's cluster identity: the cluster certificate
// authority, node keys and certificates (issued from a CSR, so a private key
// never crosses the network), and the bearer tokens used by the API and by
// hosts joining the cluster. Every connection between hosts (API, store peer
// and store client traffic) is mutual TLS from this CA.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// Validity periods of issued certificates.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	NodeValidity = 5 * 365 * 24 * time.Hour
)

// CA is the cluster certificate authority.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA creates a self-signed cluster CA named after the cluster.
func NewCA(cluster string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key for cluster %q: %w", cluster, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: "haven cluster CA " + cluster, Organization: []string{"haven:" + cluster}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA for cluster %q: %w", cluster, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode CA key: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// LoadCA parses a CA certificate and key in PEM.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("load CA key: no PEM block")
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load CA key: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// ParseCert parses the first certificate of a PEM bundle.
func ParseCert(certPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

// Fingerprint is the hex SHA-256 of a certificate's DER bytes.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// NewKeyAndCSR makes a node private key and a certificate signing request
// for it. hosts are the IP addresses and DNS names the node answers on.
func NewKeyAndCSR(node string, hosts []string) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key for node %q: %w", node, err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, fmt.Errorf("make CSR for node %q: %w", node, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key for node %q: %w", node, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// SignCSR issues a node certificate for node from a CSR. The subject is
// forced to the node name; the CSR contributes its public key and the
// addresses it asks for, of which only those allow accepts are kept (the
// cluster decides what a host may claim to be: its name, the address it
// joined from, what an admin allowed). dropped lists the others. The
// certificate is valid for both TLS server and client use.
func (ca *CA) SignCSR(csrPEM []byte, node string, allow func(host string) bool, now time.Time) (certPEM []byte, dropped []string, err error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, nil, errors.New("sign CSR: no PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("sign CSR for node %q: %w", node, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("sign CSR for node %q: bad signature: %w", node, err)
	}
	if len(csr.DNSNames)+len(csr.IPAddresses) > 64 {
		return nil, nil, fmt.Errorf("sign CSR for node %q: too many addresses", node)
	}
	if len(csr.URIs) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, nil, fmt.Errorf("sign CSR for node %q: only DNS names and IP addresses may be asked for", node)
	}
	dns := []string{node}
	for _, d := range csr.DNSNames {
		if d == node {
			continue
		}
		if allow(d) {
			dns = append(dns, d)
		} else {
			dropped = append(dropped, d)
		}
	}
	var ips []net.IP
	for _, ip := range csr.IPAddresses {
		if allow(ip.String()) {
			ips = append(ips, ip)
		} else {
			dropped = append(dropped, ip.String())
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: node, Organization: ca.Cert.Subject.Organization},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(NodeValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     dedup(dns),
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for node %q: %w", node, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), dropped, nil
}

// Renew issues a new certificate for the holder of old: the same name,
// addresses and public key (the host's private key never moves), valid for
// NodeValidity from now.
func (ca *CA) Renew(old *x509.Certificate, now time.Time) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: old.Subject.CommonName, Organization: ca.Cert.Subject.Organization},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(NodeValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     old.DNSNames,
		IPAddresses:  old.IPAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, old.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("renew the certificate of node %q: %w", old.Subject.CommonName, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// IssueClient makes a client-only certificate named cn, valid for ttl,
// with a fresh key, kept in memory: the store's root credential
// (store.RootUser), signed when an agent needs it and never written to
// disk. It names no address and cannot serve.
func (ca *CA) IssueClient(cn string, ttl time.Duration, now time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue client certificate %q: %w", cn, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: cn, Organization: ca.Cert.Subject.Organization},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue client certificate %q: %w", cn, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// IssueNode makes a key and certificate for node in one step (used by the
// host that creates the cluster).
func (ca *CA) IssueNode(node string, hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	keyPEM, csrPEM, err := NewKeyAndCSR(node, hosts)
	if err != nil {
		return nil, nil, err
	}
	certPEM, _, err = ca.SignCSR(csrPEM, node, func(string) bool { return true }, now)
	return certPEM, keyPEM, err
}

// AEADSuites are the TLS 1.2 cipher suites Haven allows: ECDHE with AEAD
// only (no CBC, no SHA-1 MACs, no RSA key exchange). TLS 1.3, whose suites
// are all AEAD, is preferred: Go negotiates it whenever both ends have it,
// which between Haven hosts is always.
var AEADSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ServerTLS is the TLS configuration of a node's servers: its certificate,
// and client certificates verified against the CA when presented (required
// when requireClient).
func ServerTLS(caPEM, certPEM, keyPEM []byte, requireClient bool) (*tls.Config, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load node certificate: %w", err)
	}
	pool, err := Pool(caPEM)
	if err != nil {
		return nil, err
	}
	WithIssuer(&pair, caPEM)
	auth := tls.VerifyClientCertIfGiven
	if requireClient {
		auth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: AEADSuites,
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   auth,
	}, nil
}

// ClientTLS is the TLS configuration to reach another node: the CA as the
// only root, and the node certificate as client certificate when given.
func ClientTLS(caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	pool, err := Pool(caPEM)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: AEADSuites, RootCAs: pool}
	if certPEM != nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("load node certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// PinnedTLS is a client TLS configuration that trusts a server only if its
// chain ends in a CA whose fingerprint starts with pin (hex). A joining host
// uses it: it knows the CA only by the fingerprint carried in its join token.
func PinnedTLS(pin string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		CipherSuites:       AEADSuites,
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) < 2 {
				return errors.New("server sent no CA certificate in its chain")
			}
			certs := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				certs[i] = c
			}
			root := certs[len(certs)-1]
			if fp := Fingerprint(root); len(pin) < 16 || fp[:len(pin)] != pin {
				return fmt.Errorf("server's cluster CA %.16s does not match the join token's %.16s", fp, pin)
			}
			pool := x509.NewCertPool()
			pool.AddCert(root)
			inter := x509.NewCertPool()
			for _, c := range certs[1 : len(certs)-1] {
				inter.AddCert(c)
			}
			_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			return err
		},
	}
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func dedup(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// ValidHostName reports whether s is an IP address or a DNS name.
func ValidHostName(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
