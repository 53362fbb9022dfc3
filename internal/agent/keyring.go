package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/model"
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
		a.log.Info("sealed the CA key with a new cluster secret key (the fence configuration once every host opens sealed secrets)", "op", "pki")
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
	if !roots.AppendCertsFromPEM(a.trustPEM()) {
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

// keepFenceReadable keeps the fence configuration in the form the
// registered hosts can read (store.KeepFenceReadable): in the clear while
// one may run a release that cannot open sealed values, sealed otherwise.
// It runs on every change of the hosts' records or of the configuration,
// until ctx ends, and says each change of form in the event log.
func (a *Agent) keepFenceReadable(ctx context.Context) {
	var lastErr string
	keep := func() {
		form, changed, err := a.st.KeepFenceReadable(ctx)
		if err != nil {
			// Said once per kind of failure: a host not granted the key
			// yet fails the same way at every change, and another host
			// does the work.
			if msg := err.Error(); ctx.Err() == nil && msg != lastErr {
				a.log.Warn("could not keep the fence configuration readable by every host", "op", "pki", "err", err)
				lastErr = msg
			}
			return
		}
		lastErr = ""
		if !changed {
			return
		}
		e := cluster.Event{Kind: "node", Msg: "fence configuration sealed again: every registered host opens sealed secrets"}
		if form.Clear {
			e.Node = form.OldHosts[0]
			e.Msg = fmt.Sprintf("fence configuration stored unsealed, readable by whoever reads the store: %s may run a release that cannot open sealed secrets (feature level below %d), and must fence if elected manager; it is sealed again once every host is upgraded or removed",
				strings.Join(form.OldHosts, ", "), model.SealedSecretsLevel)
		}
		a.log.Warn(e.Msg, "op", "pki", "old_hosts", form.OldHosts)
		if err := cluster.New(a.st).AddEvent(ctx, e); err != nil && ctx.Err() == nil {
			a.log.Warn("could not record the fence configuration's change of form", "op", "pki", "err", err)
		}
	}
	for ctx.Err() == nil {
		keep()
		for range a.st.FenceFormChanges(ctx) {
			keep()
		}
		sleepCtx(ctx, time.Second)
	}
}
