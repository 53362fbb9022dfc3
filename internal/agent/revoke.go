package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/store"
)

// Revoked host certificates. `haven node remove` records the removed host's
// certificate serial under /haven/pki/revoked/; every agent keeps
// DATA/pki/revoked.crl in step with that list, and its embedded etcd member
// reads the file on every TLS handshake (client and peer): a removed host's
// certificate no longer opens the store. With an external etcd, point its
// --client-crl-file at that file (any agent's).

// CRLFile is where the agent keeps the revocation list its store reads.
func (a *Agent) CRLFile() string { return a.dir.file(dirPKI, "revoked.crl") }

// writeCRL writes the revocation list of serials (hex). etcd reads only the
// serials from the file and does not check who signed it, so the list is
// signed by a throwaway issuer: no host needs the CA key for this.
func writeCRL(path string, serials []string, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "haven revocation list"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(100 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCRLSign | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	issuer, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		n, ok := new(big.Int).SetString(s, 16)
		if !ok {
			continue
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: now})
	}
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(now.UnixNano()), ThisUpdate: now, NextUpdate: now.Add(100 * 365 * 24 * time.Hour),
		RevokedCertificateEntries: entries,
	}, issuer, key)
	if err != nil {
		return err
	}
	// DER: etcd parses the file's bytes as they are.
	return writeFileAtomic(path, crl, 0o644)
}

// ensureCRL makes sure the revocation list exists before the store starts
// (etcd refuses every connection when the file is missing).
func (a *Agent) ensureCRL() error {
	if _, err := readCRLSerials(a.CRLFile()); err == nil {
		return nil
	}
	if err := writeCRL(a.CRLFile(), nil, a.now()); err != nil {
		return fmt.Errorf("write revocation list %s: %w", a.CRLFile(), err)
	}
	return nil
}

func readCRLSerials(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	l, err := x509.ParseRevocationList(b)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range l.RevokedCertificateEntries {
		out = append(out, e.SerialNumber.Text(16))
	}
	return out, nil
}

// syncRevocations keeps the revocation list in step with the store until
// ctx ends.
func (a *Agent) syncRevocations(ctx context.Context) {
	last := ""
	sync := func() {
		revs, err := a.st.Revocations(ctx)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("read revoked certificates", "op", "pki", "err", err)
			}
			return
		}
		var serials []string
		for _, r := range revs {
			serials = append(serials, r.Serial)
		}
		sort.Strings(serials)
		if key := strings.Join(serials, ","); key != last {
			if err := writeCRL(a.CRLFile(), serials, a.now()); err != nil {
				a.log.Error("write revocation list", "op", "pki", "err", err)
				return
			}
			last = key
			a.log.Info("revocation list updated", "op", "pki", "revoked", len(serials))
		}
	}
	sync()
	for ctx.Err() == nil {
		wch := a.st.Client().Watch(clientv3.WithRequireLeader(ctx), store.PrefixRevoked, clientv3.WithPrefix())
		for range wch {
			sync()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
			sync()
		}
	}
}
