package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

// The cluster secret key (store/keyring.go) seals the CA key and the fence
// configuration in the store. A host gets it wrapped for its certificate
// when it joins; a host that has none (it joined before secrets were
// sealed, or its grant failed) asks, and any agent holding it grants it
// after checking the asker's certificate.

// ensureSecretKey seals a store written before secrets were sealed, and
// asks for the cluster secret key when this host holds none.
func (a *Agent) ensureSecretKey(ctx context.Context) {
	if sealed, err := a.st.SealSecrets(ctx); err != nil {
		a.log.Warn("could not seal the store's secrets; the next start retries", "op", "pki", "err", err)
	} else if sealed {
		a.log.Info("sealed the CA key and the fence configuration with a new cluster secret key", "op", "pki")
	}
	_, err := a.st.SecretKey(ctx)
	if err == nil || !errors.Is(err, store.ErrNotFound) {
		if err != nil {
			a.log.Error("the cluster secret key does not open: this host cannot sign joins or read fence devices", "op", "pki", "err", err)
		}
		return
	}
	if err := a.st.RequestKey(ctx); err != nil {
		a.log.Warn("could not ask for the cluster secret key", "op", "pki", "err", err)
		return
	}
	a.log.Info("asked the other hosts for the cluster secret key", "op", "pki")
}

// grantKeys answers other hosts' requests for the cluster secret key
// until ctx ends.
func (a *Agent) grantKeys(ctx context.Context) {
	grant := func() {
		if _, err := a.st.SecretKey(ctx); err != nil {
			return // nothing to grant: another host answers
		}
		if err := a.st.GrantRequests(ctx, a.checkKeyRequest); err != nil && ctx.Err() == nil {
			a.log.Warn("cluster secret key requests", "op", "pki", "err", err)
		}
	}
	for ctx.Err() == nil {
		grant()
		wch := a.st.Client().Watch(clientv3.WithRequireLeader(ctx), store.PrefixKeyRequests, clientv3.WithPrefix())
		for range wch {
			grant()
		}
		sleepCtx(ctx, time.Second)
	}
}

// checkKeyRequest accepts a request for the cluster secret key only with
// the certificate node is registered with, issued by the cluster CA.
func (a *Agent) checkKeyRequest(node string, certPEM []byte) error {
	cert, err := pki.ParseCert(certPEM)
	if err != nil {
		return err
	}
	if cert.Subject.CommonName != node {
		return fmt.Errorf("the certificate names %q", cert.Subject.CommonName)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(a.caPEM) {
		return errors.New("no cluster CA")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("the certificate is not the cluster's: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec, err := a.st.Node(ctx, node)
	if err != nil {
		return err
	}
	if rec.CertSerial != cert.SerialNumber.Text(16) {
		return fmt.Errorf("the certificate (serial %s) is not the one the host is registered with (%s)", cert.SerialNumber.Text(16), rec.CertSerial)
	}
	return nil
}
