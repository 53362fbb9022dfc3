package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/pki"
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

// CACRLFile is where the agent keeps the same list signed by the cluster
// CA (PEM), for peers that check who signed it: libvirtd (GnuTLS) ignores
// a list its CA did not sign. It is absent until this host opened the CA
// key once.
func (a *Agent) CACRLFile() string { return a.dir.file(dirPKI, "ca-crl.pem") }

// OnCACRL has f called (from the agent's own goroutine) after each
// rewrite of CACRLFile.
func (a *Agent) OnCACRL(f func()) {
	a.crlMu.Lock()
	defer a.crlMu.Unlock()
	a.crlHooks = append(a.crlHooks, f)
}

// writeCACRL writes the revocation list of serials (hex), signed by ca, in
// PEM at path, unless the list there already is one ca signed of the same
// serials: then it is left as it is. An agent signs the list again at
// every start, and a rewritten list (a new number and date) has libvirtd
// reload its certificates, which fails the TLS handshakes it answers
// meanwhile: a failback to a host whose agent had just started failed so.
func writeCACRL(path string, ca *pki.CA, serials []string, now time.Time) error {
	if sameCACRL(path, ca.Cert, serials) {
		return nil
	}
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(now.UnixNano()), ThisUpdate: now, NextUpdate: now.Add(100 * 365 * 24 * time.Hour),
		RevokedCertificateEntries: crlEntries(serials, now),
	}, ca.Cert, ca.Key)
	if err != nil {
		return fmt.Errorf("sign the revocation list with the cluster CA: %w", err)
	}
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl}), 0o644)
}

// sameCACRL says whether path holds a revocation list (PEM) that ca signed
// of exactly serials (hex, sorted).
func sameCACRL(path string, ca *x509.Certificate, serials []string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "X509 CRL" {
		return false
	}
	l, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil || l.CheckSignatureFrom(ca) != nil {
		return false
	}
	var have []string
	for _, e := range l.RevokedCertificateEntries {
		have = append(have, e.SerialNumber.Text(16))
	}
	sort.Strings(have)
	return slices.Equal(have, normalSerials(serials))
}

// normalSerials is serials (hex) as a revocation list gives them back
// (no leading zeros, lower case), sorted; those that are not hex are left
// out, as crlEntries leaves them out.
func normalSerials(serials []string) []string {
	var out []string
	for _, s := range serials {
		if n, ok := new(big.Int).SetString(s, 16); ok {
			out = append(out, n.Text(16))
		}
	}
	sort.Strings(out)
	return out
}

func crlEntries(serials []string, now time.Time) []x509.RevocationListEntry {
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		if n, ok := new(big.Int).SetString(s, 16); ok {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: now})
		}
	}
	return entries
}

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
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(now.UnixNano()), ThisUpdate: now, NextUpdate: now.Add(100 * 365 * 24 * time.Hour),
		RevokedCertificateEntries: crlEntries(serials, now),
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

// syncRevocations keeps the revocation lists in step with the store until
// ctx ends: revoked.crl at every change of the list, ca-crl.pem also when
// the cluster CA changed (a rotation; it is checked every 30 s). Signing
// fails for a moment while a host's removal rotates the cluster secret key
// (this host's copy is wrapped again): it is tried again every second, and
// said after 10 s.
func (a *Agent) syncRevocations(ctx context.Context) {
	last, lastCA, caErr := "", "", ""
	caFails := 0
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
		key := strings.Join(serials, ",")
		if key != last {
			if err := writeCRL(a.CRLFile(), serials, a.now()); err != nil {
				a.log.Error("write revocation list", "op", "pki", "err", err)
				return
			}
			last = key
			a.log.Info("revocation list updated", "op", "pki", "revoked", len(serials))
		}
		caPEM, err := a.st.CACert(ctx)
		if err != nil {
			return
		}
		if caKey := key + "\n" + string(caPEM); caKey != lastCA {
			if err := a.writeCACRL(ctx, serials); err != nil {
				if caFails++; caFails <= 10 {
					return
				}
				if msg := err.Error(); ctx.Err() == nil && msg != caErr {
					a.log.Warn("no revocation list signed by the cluster CA for libvirtd: a removed host's certificate still opens this host's libvirtd (qemu+tls) until the CA is rotated", "op", "pki", "file", a.CACRLFile(), "err", err)
					caErr = msg
				}
				return
			}
			lastCA, caErr, caFails = caKey, "", 0
			a.crlMu.Lock()
			hooks := slices.Clone(a.crlHooks)
			a.crlMu.Unlock()
			for _, f := range hooks {
				f()
			}
		}
	}
	for ctx.Err() == nil {
		// Watch first, then read: a revocation in between is not missed.
		wch := a.st.Client().Watch(clientv3.WithRequireLeader(ctx), store.PrefixRevoked, clientv3.WithPrefix())
		sync()
	watch:
		for {
			every := 30 * time.Second
			if caFails > 0 {
				every = time.Second
			}
			select {
			case _, ok := <-wch:
				if !ok {
					break watch
				}
			case <-time.After(every):
			}
			sync()
		}
		sleepCtx(ctx, time.Second)
	}
}

// clusterCA opens the cluster CA's key (sealed in the store) with this
// host's copy of the cluster secret key.
func (a *Agent) clusterCA(ctx context.Context) (*pki.CA, error) {
	caPEM, caKey, err := a.st.CA(ctx)
	if err != nil {
		return nil, err
	}
	return pki.LoadCA(caPEM, caKey)
}

// writeCACRL signs the list of serials with the cluster CA (which every
// host holding the cluster secret key opens) into CACRLFile.
func (a *Agent) writeCACRL(ctx context.Context, serials []string) error {
	ca, err := a.clusterCA(ctx)
	if err != nil {
		return err
	}
	return writeCACRL(a.CACRLFile(), ca, serials, a.now())
}
