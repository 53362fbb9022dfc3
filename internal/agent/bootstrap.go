package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"crypto/tls"
	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

// bootstrap creates a new cluster with this host as its first node.
func (a *Agent) bootstrap(ctx context.Context) error {
	now := a.now().UTC()
	external := len(a.cfg.StoreEndpoints) > 0
	if !external {
		if err := checkFree(a.cfg.PeerListen, a.cfg.StoreClientListen); err != nil {
			return err
		}
	}
	ca, err := pki.NewCA(a.cfg.ClusterName, now)
	if err != nil {
		return err
	}
	a.caPEM = ca.CertPEM
	a.certPEM, a.keyPEM, err = ca.IssueNode(a.cfg.Node, hostsOf(a.cfg.Listen, a.cfg.PeerListen, a.cfg.StoreClientListen), now)
	if err != nil {
		return err
	}
	if err := a.savePKI(); err != nil {
		return err
	}
	a.state = persisted{
		Cluster: a.cfg.ClusterName, ClusterID: randID(), Node: a.cfg.Node, APIURL: a.APIURL(),
		External: external, CAFingerprint: pki.Fingerprint(ca.Cert), Dev: a.cfg.Dev,
	}
	if external {
		if err := a.connectExternal(ctx); err != nil {
			return err
		}
	} else {
		a.state.StoreMember = true
		a.state.PeerURL, a.state.ClientURL = a.peerURL(), a.clientURL()
		a.state.StoreEndpoints = []string{a.clientURL()}
		if err := a.startMember(ctx, "", false); err != nil {
			return err
		}
		if err := a.connect(ctx, a.state.StoreEndpoints); err != nil {
			return err
		}
	}
	a.st.SetIdentity(a.cfg.Node, a.certPEM, a.keyPEM)
	admin, join := pki.NewAPIToken(), pki.NewJoinToken(a.state.CAFingerprint)
	cc := store.ClusterConfig{Name: a.cfg.ClusterName, ID: a.state.ClusterID, StoreMembers: a.cfg.StoreMembers, External: external, StoreRoles: !external, Created: now}
	tokens := []store.TokenRecord{
		{ID: admin.ID, Hash: admin.Hash(), Role: store.RoleAdmin, Name: "init admin (" + a.cfg.Node + ")", Created: now, Node: a.cfg.Node},
		{ID: join.ID, Hash: join.Hash(), Role: store.RoleJoin, Name: "init join", Created: now, Expires: now.Add(api.DefaultJoinTokenTTL), Uses: InitJoinUses},
	}
	if err := a.st.InitCluster(ctx, cc, ca.CertPEM, ca.KeyPEM, tokens...); err != nil {
		if errors.Is(err, store.ErrExists) {
			if old, err2 := a.st.ClusterConfig(ctx); err2 == nil {
				return fmt.Errorf("the store already holds cluster %q (id %s): join it with --join URL --token TOKEN instead of --init", old.Name, old.ID)
			}
		}
		return err
	}
	rec := a.nodeRecord(now)
	if err := a.st.RegisterNode(ctx, rec, store.OpNodeLevel(rec.Name, model.FeatureLevel)); err != nil {
		a.undoInit(ctx, tokens)
		return err
	}
	if !external {
		// A new embedded store enforces the store roles from the start.
		if err := a.st.EnforceRoles(ctx, []string{a.cfg.Node}); err != nil {
			return err
		}
	}
	if err := writeFileAtomic(a.dir.file(fileAdminToken), []byte(admin.String()+"\n"), 0o600); err != nil {
		a.undoInit(ctx, tokens)
		return err
	}
	if err := a.dir.save(a.state); err != nil {
		a.undoInit(ctx, tokens)
		return err
	}
	a.adminToken, a.joinToken = admin.String(), join.String()
	a.log.Info("created cluster", "op", "init", "cluster", cc.Name, "cluster_id", cc.ID)
	return nil
}

// undoInit removes a half-created cluster from an external store.
func (a *Agent) undoInit(ctx context.Context, tokens []store.TokenRecord) {
	if !a.state.External {
		return // the embedded store's data goes with the data dir
	}
	cli := a.st.Client()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	cli.Delete(cctx, store.KeyClusterConfig)
	cli.Delete(cctx, store.KeyCACert)
	cli.Delete(cctx, store.KeyCAKey)
	cli.Delete(cctx, store.KeyHeartbeat)
	cli.Delete(cctx, store.KeyKeyring(a.cfg.Node))
	cli.Delete(cctx, store.KeyNodeReg(a.cfg.Node))
	for _, t := range tokens {
		cli.Delete(cctx, store.KeyToken(t.ID))
	}
}

func (a *Agent) nodeRecord(now time.Time) store.NodeRecord {
	cert, _ := pki.ParseCert(a.certPEM)
	rec := store.NodeRecord{Name: a.cfg.Node, APIAddr: a.APIURL(), StoreMember: a.state.StoreMember, Registered: now}
	if cert != nil {
		rec.CertSerial = cert.SerialNumber.Text(16)
	}
	if a.state.StoreMember {
		rec.PeerAddr, rec.ClientAddr = a.peerURL(), a.clientURL()
		if a.embedded != nil {
			rec.MemberID = uint64(a.embedded.Server.MemberID())
		}
	}
	return rec
}

// join joins an existing cluster through the API of one of its agents.
func (a *Agent) join(ctx context.Context) (err error) {
	tok, err := pki.ParseToken(a.cfg.JoinToken)
	if err != nil || !tok.Join {
		return errors.New("--token is not a join token (hvj.…): create one on the cluster with `haven token create --role join`")
	}
	external := len(a.cfg.StoreEndpoints) > 0
	var extCluster store.ClusterConfig
	if external {
		// Reach the external store first: a join that could not use it
		// must fail before the cluster registers this host.
		if err := a.connectExternal(ctx); err != nil {
			return err
		}
		if extCluster, err = a.st.ClusterConfig(ctx); err != nil {
			return fmt.Errorf("read the cluster from the external store: %w; check --store-endpoints", err)
		}
	} else if err := checkFree(a.cfg.PeerListen, a.cfg.StoreClientListen); err != nil {
		return err
	}
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(a.cfg.Node, hostsOf(a.cfg.Listen, a.cfg.PeerListen, a.cfg.StoreClientListen))
	if err != nil {
		return err
	}
	c := client.New(a.cfg.JoinAddr, tok.String(), pki.PinnedTLS(tok.CAPin))
	defer c.Close()
	req := api.JoinRequest{Node: a.cfg.Node, CSR: string(csrPEM), APIAddr: a.APIURL(), External: external, FeatureLevel: model.FeatureLevel}
	if !external {
		req.PeerAddr, req.ClientAddr = a.peerURL(), a.clientURL()
	}
	var resp *api.JoinResponse
	for attempt := 0; ; attempt++ {
		jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err = c.Join(jctx, req)
		cancel()
		if client.IsStatus(err, http.StatusServiceUnavailable) && attempt < 20 && ctx.Err() == nil {
			a.log.Info("cluster busy, retrying join", "op", "join", "err", err)
			select {
			case <-time.After(time.Second):
				continue
			case <-ctx.Done():
			}
		}
		break
	}
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) {
			return fmt.Errorf("join cluster at %s: %s", a.cfg.JoinAddr, ae.Message)
		}
		return fmt.Errorf("join cluster at %s: %w; check the address and that an agent runs there", a.cfg.JoinAddr, err)
	}
	// From here on the cluster knows this node: undo on failure.
	defer func() {
		if err != nil {
			a.undoJoin(ctx, resp)
		}
	}()
	ca, err := pki.ParseCert([]byte(resp.CACert))
	if err != nil {
		return fmt.Errorf("join: bad CA certificate in the answer: %w", err)
	}
	if fp := pki.Fingerprint(ca); !strings.HasPrefix(fp, tok.CAPin) {
		return errors.New("join: the cluster sent a CA that does not match the join token")
	}
	a.caPEM, a.certPEM, a.keyPEM = []byte(resp.CACert), []byte(resp.Cert), keyPEM
	if err := a.savePKI(); err != nil {
		return err
	}
	a.state = persisted{
		Cluster: resp.Cluster, ClusterID: resp.ClusterID, Node: a.cfg.Node, APIURL: a.APIURL(),
		External: resp.External, CAFingerprint: pki.Fingerprint(ca), StoreEndpoints: resp.StoreEndpoints,
	}
	switch {
	case resp.External:
		if a.st == nil || extCluster.ID != resp.ClusterID {
			return fmt.Errorf("--store-endpoints lead to cluster %q (id %s), not to the one at %s (%q, id %s)", extCluster.Name, extCluster.ID, a.cfg.JoinAddr, resp.Cluster, resp.ClusterID)
		}
	case resp.Member:
		a.state.StoreMember = true
		a.state.PeerURL, a.state.ClientURL = a.peerURL(), a.clientURL()
		if err := a.startMember(ctx, resp.InitialCluster, true); err != nil {
			return err
		}
		if err := a.connect(ctx, resp.StoreEndpoints); err != nil {
			return err
		}
		// The promotion is made as the store's root, whose credential
		// needs the CA key the cluster secret key opens (granted in the
		// join).
		a.st.SetIdentity(a.cfg.Node, a.certPEM, a.keyPEM)
		pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := a.st.Promote(pctx, resp.MemberID)
		cancel()
		if err != nil {
			return err
		}
		a.state.StoreEndpoints = append([]string{a.clientURL()}, resp.StoreEndpoints...)
		a.st.Client().SetEndpoints(a.state.StoreEndpoints...)
		a.log.Info("promoted to voting store member", "op", "join", "member", fmt.Sprintf("%x", resp.MemberID))
	default:
		if err := a.connect(ctx, resp.StoreEndpoints); err != nil {
			return err
		}
	}
	// A host-local admin token, so the CLI works on this host without flags.
	now := a.now().UTC()
	admin := pki.NewAPIToken()
	if err := a.st.PutToken(ctx, store.TokenRecord{ID: admin.ID, Hash: admin.Hash(), Role: store.RoleAdmin, Name: "local admin (" + a.cfg.Node + ")", Created: now, Node: a.cfg.Node}); err != nil {
		return err
	}
	if err := writeFileAtomic(a.dir.file(fileAdminToken), []byte(admin.String()+"\n"), 0o600); err != nil {
		a.st.DeleteToken(context.WithoutCancel(ctx), admin.ID)
		return err
	}
	if err := a.dir.save(a.state); err != nil {
		a.st.DeleteToken(context.WithoutCancel(ctx), admin.ID)
		return err
	}
	a.adminToken = admin.String()
	a.log.Info("joined cluster", "op", "join", "cluster", resp.Cluster, "store_member", a.state.StoreMember)
	return nil
}

// undoJoin removes this node's registration and store membership after a
// failed join, through any store endpoint that still answers.
func (a *Agent) undoJoin(ctx context.Context, resp *api.JoinResponse) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	st := a.st
	if st != nil {
		// The Store owns the member: it stops it (once; a second Close of
		// an etcd member panics) and keeps its client on the others.
		a.st = nil
		st.StopMember()
		a.embedded = nil
	} else if a.embedded != nil {
		a.embedded.Close()
		a.embedded = nil
	}
	if st == nil && !resp.External && len(resp.StoreEndpoints) > 0 && resp.Cert != "" {
		tlsCfg, err := pki.ClientTLS([]byte(resp.CACert), []byte(resp.Cert), a.keyPEM)
		if err == nil {
			st, _ = store.Connect(ctx, store.ClientConfig{Endpoints: resp.StoreEndpoints, TLS: tlsCfg, Embedded: true}, nil, a.log)
		}
	}
	if st == nil {
		a.log.Error("could not undo the failed join: remove the node with `haven node remove`", "op", "join")
		return
	}
	defer st.Close()
	// Undone as the store's root (its membership, its store user): the
	// cluster secret key was granted to this host's new certificate.
	if resp.Cert != "" {
		st.SetIdentity(a.cfg.Node, []byte(resp.Cert), a.keyPEM)
	}
	if resp.Member {
		if err := st.RemoveMember(ctx, resp.MemberID); err != nil {
			a.log.Warn("undo join: remove store member", "op", "join", "err", err)
		}
	}
	if !resp.External {
		if err := st.RevokeHost(ctx, a.cfg.Node); err != nil {
			a.log.Warn("undo join: remove store user", "op", "join", "err", err)
		}
	}
	if err := st.DeleteNode(ctx, a.cfg.Node); err != nil {
		a.log.Warn("undo join: remove registration", "op", "join", "err", err)
	}
}

// checkFree fails if an address cannot be listened on.
func checkFree(addrs ...string) error {
	for _, ad := range addrs {
		l, err := net.Listen("tcp", ad)
		if err != nil {
			return fmt.Errorf("listen for the store on %s: %w", ad, err)
		}
		l.Close()
	}
	return nil
}

func externalTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" {
		return nil, nil
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read --store-ca: %w", err)
	}
	var cert, key []byte
	if certFile != "" {
		if cert, err = os.ReadFile(certFile); err != nil {
			return nil, fmt.Errorf("read --store-cert: %w", err)
		}
		if key, err = os.ReadFile(keyFile); err != nil {
			return nil, fmt.Errorf("read --store-key: %w", err)
		}
	}
	return pki.ClientTLS(ca, cert, key)
}

func randID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func writeLocal(dir string, l api.Local) error { return client.WriteLocal(dir, l) }
