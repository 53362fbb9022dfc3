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
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/apitest"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/fence"
	"github.com/haven-ha/haven/internal/model"
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
	// A host named root would hold the store's administrator certificate.
	forged.Node = "root"
	if _, err := join(ctx, ag, tok.Token, forged); status(err) != 400 {
		t.Errorf("join as root: %v, want 400", err)
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
	// The host has renewed its certificate since: the earlier one (cert,
	// still valid, tried below) is revoked with the current one.
	currentPEM, err := ca.Renew(cert, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	current, _ := pki.ParseCert(currentPEM)
	if err := ag.A.Store().RegisterNode(ctx, store.NodeRecord{Name: "gone", APIAddr: "https://127.0.0.1:1", CertSerial: current.SerialNumber.Text(16), PrevSerials: []string{cert.SerialNumber.Text(16)}, Registered: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	// Its store user, as its join made it.
	if err := ag.A.Store().GrantHost(ctx, "gone"); err != nil {
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
	if err != nil || len(l.RevokedCertificateEntries) != 2 {
		t.Fatalf("revocation list %s: %v, want the removed host's two serials", filepath.Base(ag.A.CRLFile()), err)
	}
	for _, c := range []*x509.Certificate{cert, current} {
		if !slices.ContainsFunc(l.RevokedCertificateEntries, func(e x509.RevocationListEntry) bool { return e.SerialNumber.Cmp(c.SerialNumber) == 0 }) {
			t.Errorf("revocation list lacks serial %s", c.SerialNumber.Text(16))
		}
	}
}

// A joined host's certificate on the embedded store (which enforces the
// store roles from --init) writes the shared keys and its own, but not the
// other host's liveness, reports or pool checks, nor keys outside Haven's,
// nor the store's membership, users or snapshots: a host cannot make a
// dead host look alive, fake its guests' state, or take the store over.
func TestHostConfinedByStoreRoles(t *testing.T) {
	ag := startAgent(t)
	ctx := ctxT(t)
	st, err := ag.Clients["admin"].Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Store.Roles {
		t.Errorf("status of a new cluster: store roles not enforced")
	}
	tok, err := ag.Clients["admin"].CreateToken(ctx, api.TokenRequest{Role: "join"})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, csr, err := pki.NewKeyAndCSR("h2", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := join(ctx, ag, tok.Token, api.JoinRequest{Node: "h2", CSR: string(csr), APIAddr: "https://127.0.0.1:1", PeerAddr: "https://127.0.0.1:2", ClientAddr: "https://127.0.0.1:3"})
	if err != nil {
		t.Fatalf("join h2: %v", err)
	}
	tlsCfg, err := pki.ClientTLS([]byte(resp.CACert), []byte(resp.Cert), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := clientv3.New(clientv3.Config{Endpoints: ag.A.Store().Client().Endpoints(), TLS: tlsCfg, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	n1Live := store.KeyNodeLive("n1")
	live, err := h2.Get(ctx, n1Live)
	if err != nil || len(live.Kvs) != 1 {
		t.Fatalf("h2 reads n1's liveness: %v %v", live, err)
	}
	for _, k := range []string{n1Live, cluster.KeyReport("n1", "g1"), cluster.KeyPoolHealth("n1", "default"), "/etc/x", "/havenx"} {
		if _, err := h2.Put(ctx, k, "{}"); !store.IsDenied(err) {
			t.Errorf("h2 wrote %s: %v, want permission denied", k, err)
		}
		if _, err := h2.Delete(ctx, k); !store.IsDenied(err) {
			t.Errorf("h2 deleted %s: %v, want permission denied", k, err)
		}
	}
	if _, err := h2.Delete(ctx, "", clientv3.WithFromKey()); !store.IsDenied(err) {
		t.Errorf("h2 deleted every key: %v, want permission denied", err)
	}
	lease := clientv3.LeaseID(live.Kvs[0].Lease)
	if _, err := h2.Revoke(ctx, lease); !store.IsDenied(err) {
		t.Errorf("h2 revoked n1's lease: %v, want permission denied", err)
	}
	if _, err := h2.MemberAddAsLearner(ctx, []string{"https://127.0.0.1:4"}); !store.IsDenied(err) {
		t.Errorf("h2 added a store member: %v, want permission denied", err)
	}
	if _, err := h2.UserAdd(ctx, "x", "pw"); !store.IsDenied(err) {
		t.Errorf("h2 added a store user: %v, want permission denied", err)
	}
	if _, err := h2.AuthDisable(ctx); !store.IsDenied(err) {
		t.Errorf("h2 turned the store roles off: %v, want permission denied", err)
	}
	// What it may: its own report, and the shared keys.
	for _, k := range []string{cluster.KeyReport("h2", "g1"), store.PrefixGuests + "g9"} {
		if _, err := h2.Put(ctx, k, "{}"); err != nil {
			t.Errorf("h2 writes %s: %v", k, err)
		}
	}
	// n1 still holds its liveness, and the agent (as root) still takes a
	// backup.
	if r, err := ag.A.Store().Client().Get(ctx, n1Live); err != nil || len(r.Kvs) != 1 || r.Kvs[0].Lease != int64(lease) {
		t.Errorf("n1's liveness after h2's attempts: %v %v", r, err)
	}
	var n int64
	if n, err = ag.A.Store().Snapshot(ctx, io.Discard); err != nil || n == 0 {
		t.Errorf("backup as root: %d bytes, %v", n, err)
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

// Issue 10: the CA key and the fence secrets are not readable with a host
// certificate alone. The store holds them sealed with the cluster secret
// key, which a host holds wrapped for its own certificate's key; removing
// a host rotates that key, so what the removed host kept (its key, its
// keyring entry, a copy of the store) opens nothing the store holds after.
func TestSecretsSealedFromRemovedHost(t *testing.T) {
	ag := startAgent(t)
	ctx := ctxT(t)
	st := ag.A.Store()
	fc := fence.Config{
		Devices: []fence.Device{{Name: "pdu1", Agent: "fence_ipmilan", Params: map[string]string{"ip": "192.0.2.1", "password": "pdu-s3cret"}, Plugs: map[string]string{"n1": "1"}}},
	}
	if err := cluster.New(st).WriteSealed(ctx, cluster.KeyFenceConfig, fc); err != nil {
		t.Fatalf("set fence config: %v", err)
	}
	tok, err := ag.Clients["admin"].CreateToken(ctx, api.TokenRequest{Role: "join"})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, csr, err := pki.NewKeyAndCSR("j1", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := join(ctx, ag, tok.Token, api.JoinRequest{Node: "j1", CSR: string(csr), APIAddr: "https://127.0.0.1:1", FeatureLevel: model.FeatureLevel})
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	caPEM, err := os.ReadFile(ag.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	// What j1's certificate reads from the store while it is a host.
	tlsCfg, err := pki.ClientTLS(caPEM, []byte(resp.Cert), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	j1, err := clientv3.New(clientv3.Config{Endpoints: st.Client().Endpoints(), TLS: tlsCfg, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer j1.Close()
	raw := func(cli *clientv3.Client, key string) []byte {
		t.Helper()
		r, err := cli.Get(ctx, key)
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("read %s: %v (%d values)", key, err, len(r.Kvs))
		}
		return r.Kvs[0].Value
	}
	caKey, fenceRaw := raw(j1, store.KeyCAKey), raw(j1, store.KeyFenceConfig)
	if strings.Contains(string(caKey), "PRIVATE KEY") {
		t.Fatalf("the store holds the CA key in the clear: %.40s...", caKey)
	}
	if strings.Contains(string(fenceRaw), "pdu-s3cret") {
		t.Fatal("the store holds the fence password in the clear")
	}
	var entry store.KeyringEntry
	if err := json.Unmarshal(raw(j1, store.KeyKeyring("j1")), &entry); err != nil {
		t.Fatal(err)
	}
	k, err := pki.UnwrapKey(keyPEM, entry.Wrapped)
	if err != nil {
		t.Fatalf("the joined host cannot unwrap its cluster secret key: %v", err)
	}
	if _, err := k.Open(store.KeyCAKey, caKey); err != nil {
		t.Fatalf("the joined host cannot open the CA key: %v", err)
	}
	// Another host's key does not unwrap j1's entry.
	otherKey, _, _ := pki.NewKeyAndCSR("x", nil)
	if _, err := pki.UnwrapKey(otherKey, entry.Wrapped); err == nil {
		t.Fatal("j1's keyring entry opens with another key")
	}

	if err := ag.Clients["admin"].Do(ctx, "DELETE", "/api/v1/nodes/j1", nil, nil); err != nil {
		t.Fatalf("node remove: %v", err)
	}
	// After removal, even with the store's contents in hand (a CRL not
	// configured on an external etcd, a backup), j1's key opens nothing.
	cli := st.Client()
	if r, err := cli.Get(ctx, store.KeyKeyring("j1")); err != nil || len(r.Kvs) != 0 {
		t.Errorf("the removed host's keyring entry: %v, %d values, want deleted", err, len(r.Kvs))
	}
	if _, err := k.Open(store.KeyCAKey, raw(cli, store.KeyCAKey)); err == nil {
		t.Error("the removed host's secret key still opens the CA key")
	}
	if _, err := k.Open(store.KeyFenceConfig, raw(cli, store.KeyFenceConfig)); err == nil {
		t.Error("the removed host's secret key still opens the fence configuration")
	}
	// The hosts left still can, and sign joins.
	if got, err := cluster.ReadSealed[fence.Config](ctx, cluster.New(st), cluster.KeyFenceConfig); err != nil || got.Devices[0].Params["password"] != "pdu-s3cret" {
		t.Errorf("fence config after rotation: %v", err)
	}
	tok2, err := ag.Clients["admin"].CreateToken(ctx, api.TokenRequest{Role: "join"})
	if err != nil {
		t.Fatal(err)
	}
	_, csr2, _ := pki.NewKeyAndCSR("j2", []string{"127.0.0.1"})
	if _, err := join(ctx, ag, tok2.Token, api.JoinRequest{Node: "j2", CSR: string(csr2), APIAddr: "https://127.0.0.1:1", FeatureLevel: model.FeatureLevel}); err != nil {
		t.Errorf("join after rotation: %v", err)
	}
}
