// Package security replays the attacks of issue 10 against a real agent on
// loopback (embedded etcd, TLS API): a joining host forging its name and
// addresses, a join token used twice, and a removed host trying the store
// with its certificate. Other attacks are replayed next to the code they
// hit: internal/api (guest paths, login flood and throttle, sessions,
// streams, edit flood, every mutating route as a viewer), internal/storage
// and internal/hostagent (files outside pools on the host),
// internal/hypervisor/qemu (QEMU unprivileged), internal/fence, internal/cli.
package security

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/apitest"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

func startAgent(t *testing.T) *apitest.Agent {
	t.Helper()
	ag, err := apitest.Start("n1", "")
	if err != nil {
		t.Fatalf("start agent: %v", err)
	}
	t.Cleanup(ag.Stop)
	return ag
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func join(ctx context.Context, ag *apitest.Agent, token string, req api.JoinRequest) (*api.JoinResponse, error) {
	caPEM, err := os.ReadFile(ag.CAFile)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := pki.ClientTLS(caPEM, nil, nil)
	if err != nil {
		return nil, err
	}
	c := client.New(ag.URL(), token, tlsCfg)
	defer c.Close()
	var resp api.JoinResponse
	return &resp, c.Do(ctx, "POST", "/api/v1/join", req, &resp)
}

func status(err error) int {
	var e *api.Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// A second host joins with a CSR asking for another host's name and for
// 8.8.8.8: its certificate names only itself and the addresses the cluster
// allows. The single-use token then admits nobody else, and a host named
// like an existing one is refused.
func TestForgedJoin(t *testing.T) {
	ag := startAgent(t)
	ctx := ctxT(t)
	tok, err := ag.Clients["admin"].CreateToken(ctx, api.TokenRequest{Role: "join"})
	if err != nil {
		t.Fatal(err)
	}
	_, csr, err := pki.NewKeyAndCSR("j2", []string{"127.0.0.1", "8.8.8.8", "n1", "j2.example"})
	if err != nil {
		t.Fatal(err)
	}
	req := api.JoinRequest{Node: "j2", CSR: string(csr), APIAddr: "https://127.0.0.1:1", PeerAddr: "https://127.0.0.1:2", ClientAddr: "https://127.0.0.1:3"}

	// A name in use is refused (before the token is spent).
	forged := req
	forged.Node = "n1"
	if _, err := join(ctx, ag, tok.Token, forged); status(err) != 409 {
		t.Errorf("join as n1, the existing host: %v, want 409", err)
	}
	// Addresses it does not have are refused where they would be used.
	bad := req
	bad.APIAddr = "https://8.8.8.8:443"
	if _, err := join(ctx, ag, tok.Token, bad); status(err) != 403 {
		t.Errorf("join advertising 8.8.8.8: %v, want 403", err)
	}

	resp, err := join(ctx, ag, tok.Token, req)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	cert, err := pki.ParseCert([]byte(resp.Cert))
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "j2" || fmt.Sprint(cert.DNSNames) != "[j2]" {
		t.Errorf("certificate for %q with names %v, want j2 only", cert.Subject.CommonName, cert.DNSNames)
	}
	for _, ip := range cert.IPAddresses {
		if !ip.IsLoopback() {
			t.Errorf("certificate has address %s, which the join did not come from", ip)
		}
	}
	// Single use: the token admits no second host.
	again := req
	again.Node = "j3"
	if _, err := join(ctx, ag, tok.Token, again); status(err) != 401 {
		t.Errorf("second join with a single-use token: %v, want 401", err)
	}
	// --uses 2 admits two.
	tok2, err := ag.Clients["admin"].CreateToken(ctx, api.TokenRequest{Role: "join", Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range []string{"j3", "j4", "j5"} {
		r := req
		r.Node = n
		_, err := join(ctx, ag, tok2.Token, r)
		if i < 2 && err != nil {
			t.Errorf("join %s with a 2-use token: %v", n, err)
		}
		if i == 2 && status(err) != 401 {
			t.Errorf("third join with a 2-use token: %v, want 401", err)
		}
	}
}

// A removed host's certificate no longer opens the store, and its tokens
// (its local admin token) are gone.
func TestRemovedHostRefusedByStore(t *testing.T) {
	ag := startAgent(t)
	ctx := ctxT(t)
	caPEM, caKey, err := ag.A.Store().CA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(caPEM, caKey)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueNode("gone", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := pki.ParseCert(certPEM)
	if err := ag.A.Store().RegisterNode(ctx, store.NodeRecord{Name: "gone", APIAddr: "https://127.0.0.1:1", CertSerial: cert.SerialNumber.Text(16), Registered: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	adminTok := pki.NewAPIToken()
	if err := ag.A.Store().PutToken(ctx, store.TokenRecord{ID: adminTok.ID, Hash: adminTok.Hash(), Role: store.RoleAdmin, Name: "local admin (gone)", Node: "gone", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.ClientTLS(caPEM, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	endpoints := ag.A.Store().Client().Endpoints()
	readStore := func() error {
		cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg.Clone(), DialTimeout: 2 * time.Second})
		if err != nil {
			return err
		}
		defer cli.Close()
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err = cli.Get(rctx, store.KeyCAKey)
		return err
	}
	// Before: the host's certificate reads the store (the test can fail).
	if err := readStore(); err != nil {
		t.Fatalf("the host's certificate before removal: %v", err)
	}
	if err := ag.Clients["admin"].Do(ctx, "DELETE", "/api/v1/nodes/gone", nil, nil); err != nil {
		t.Fatalf("node remove: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := readStore()
		if err != nil {
			t.Logf("removed host's certificate refused: %v", err)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a removed host's certificate still reads the store")
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
	if _, err := ag.A.Store().Token(ctx, adminTok.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the removed host's local admin token: %v, want it deleted", err)
	}
	// The agent's revocation list names the serial.
	b, err := os.ReadFile(ag.A.CRLFile())
	if err != nil {
		t.Fatal(err)
	}
	l, err := x509.ParseRevocationList(b)
	if err != nil || len(l.RevokedCertificateEntries) != 1 || l.RevokedCertificateEntries[0].SerialNumber.Cmp(cert.SerialNumber) != 0 {
		t.Errorf("revocation list %s: %v, want the removed host's serial", filepath.Base(ag.A.CRLFile()), err)
	}
}

// Issue 10, Low: TLS 1.2 with CBC or SHA-1 suites is refused, TLS 1.3 is
// what hosts speak, and the UI's answers carry HSTS.
func TestTLSOnlyAEADAndHSTS(t *testing.T) {
	ag := startAgent(t)
	addr := strings.TrimPrefix(ag.URL(), "https://")
	cbc := &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_128_CBC_SHA}}
	if c, err := tls.Dial("tcp", addr, cbc); err == nil {
		c.Close()
		t.Errorf("TLS 1.2 with CBC-SHA1 suites accepted (%s)", tls.CipherSuiteName(c.ConnectionState().CipherSuite))
	}
	for _, ep := range append([]string{addr}, strings.TrimPrefix(ag.A.Store().Client().Endpoints()[0], "https://")) {
		if c, err := tls.Dial("tcp", ep, cbc); err == nil {
			c.Close()
			t.Errorf("%s: TLS 1.2 with CBC-SHA1 suites accepted", ep)
		}
	}
	caPEM, _ := os.ReadFile(ag.CAFile)
	cfg, _ := pki.ClientTLS(caPEM, nil, nil)
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("hosts speak %s, want TLS 1.3", tls.VersionName(v))
	}
	c.Close()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(ag.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if h := resp.Header.Get("Strict-Transport-Security"); !strings.Contains(h, "max-age=") {
		t.Errorf("no HSTS header on the UI: %q", h)
	}
}
