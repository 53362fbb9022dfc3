package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/haven-ha/haven/internal/pki"
)

// DefaultCertRenewBefore is how long before its expiry a host renews its
// certificate: a fifth of its validity (a year of five).
const DefaultCertRenewBefore = pki.NodeValidity / 5

// maxPrevSerials bounds the earlier certificates a registration keeps for
// revocation; a renewed certificate is years from expiry, so only the
// last few can still be valid.
const maxPrevSerials = 4

// tlsPair is the host's current certificate (with the CA, for joining
// hosts that check the chain against their pin) and key.
func (a *Agent) tlsPair() (*tls.Certificate, error) {
	a.certMu.Lock()
	certPEM, keyPEM, caPEM := a.certPEM, a.keyPEM, a.caPEM
	a.certMu.Unlock()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load node certificate: %w", err)
	}
	pki.WithIssuer(&pair, caPEM)
	return &pair, nil
}

// hostCert is the host's current certificate.
func (a *Agent) hostCert() (*x509.Certificate, error) {
	a.certMu.Lock()
	certPEM := a.certPEM
	a.certMu.Unlock()
	cert, err := pki.ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("read the host certificate: %w", err)
	}
	return cert, nil
}

// renewLoop renews the host's certificate when it nears its expiry,
// until ctx ends.
func (a *Agent) renewLoop(ctx context.Context) {
	every := a.cfg.CertCheckEvery
	if every <= 0 {
		every = time.Hour
	}
	for ctx.Err() == nil {
		if err := a.renewIfDue(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("host certificate not renewed; retrying later", "op", "pki", "err", err)
		}
		sleepCtx(ctx, every)
	}
}

// renewIfDue renews the host's certificate (reissue) when less than
// CertRenewBefore of it is left.
func (a *Agent) renewIfDue(ctx context.Context) error {
	before := a.cfg.CertRenewBefore
	if before <= 0 {
		before = DefaultCertRenewBefore
	}
	old, err := a.hostCert()
	if err != nil {
		return err
	}
	if a.now().Before(old.NotAfter.Add(-before)) {
		return nil
	}
	return a.reissue(ctx, "renewed")
}

// reissue signs a new certificate for this host with the store's CA: the
// same name, addresses and key. The registration names the new serial and
// keeps the old one for `haven node remove`; the store, API and peers use
// the new certificate from their next connection on (the embedded etcd
// reads node.crt at every handshake).
func (a *Agent) reissue(ctx context.Context, why string) error {
	a.reissueMu.Lock() // renewal and CA rotation
	defer a.reissueMu.Unlock()
	old, err := a.hostCert()
	if err != nil {
		return err
	}
	now := a.now()
	ca, err := a.clusterCA(ctx)
	if err != nil {
		return err
	}
	newPEM, err := ca.Renew(old, now)
	if err != nil {
		return err
	}
	cert, _ := pki.ParseCert(newPEM)
	rec, err := a.st.Node(ctx, a.cfg.Node)
	if err != nil {
		return err
	}
	oldSerial := old.SerialNumber.Text(16)
	rec.PrevSerials = append(rec.PrevSerials, oldSerial)
	if n := len(rec.PrevSerials); n > maxPrevSerials {
		rec.PrevSerials = rec.PrevSerials[n-maxPrevSerials:]
	}
	rec.CertSerial = cert.SerialNumber.Text(16)
	if err := a.st.UpdateNode(ctx, rec); err != nil {
		return err
	}
	_, certFile, _ := a.TLSFiles()
	if err := writeFileAtomic(certFile, newPEM, 0o644); err != nil {
		return err
	}
	a.certMu.Lock()
	a.certPEM = newPEM
	a.certMu.Unlock()
	a.st.SetIdentity(a.cfg.Node, newPEM, a.keyPEM)
	a.log.Info("host certificate "+why, "op", "pki", "old_serial", oldSerial, "serial", rec.CertSerial,
		"old_expiry", old.NotAfter.UTC(), "expiry", cert.NotAfter.UTC())
	return nil
}
