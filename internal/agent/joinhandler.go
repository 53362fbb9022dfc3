package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

func (a *Agent) registerJoin() {
	a.srv.HandleFunc("POST", "/api/v1/join", api.RolePublic, a.handleJoin)
}

// handleJoin admits a new host: checks its join token, signs its CSR,
// registers its name and, while the store has fewer voting members than
// wanted, adds it as a store learner.
func (a *Agent) handleJoin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rec, err := a.srv.Authenticate(ctx, api.BearerToken(r))
	if err != nil {
		api.WriteError(w, err)
		return
	}
	if rec.Role != store.RoleJoin {
		api.WriteError(w, api.Errorf(http.StatusForbidden, "", "token %s is not a join token", rec.ID))
		return
	}
	var req api.JoinRequest
	if err := api.DecodeJSON(w, r, &req); err != nil {
		api.WriteError(w, err)
		return
	}
	resp, err := a.admit(ctx, req, *rec, sourceIP(r))
	if err != nil {
		a.log.Warn("join refused", "op", "join", "joining", req.Node, "err", err)
		api.WriteError(w, err)
		return
	}
	a.log.Info("host joined", "op", "join", "joining", req.Node, "store_member", resp.Member)
	api.WriteJSON(w, http.StatusOK, resp)
}

// InitJoinUses is how many hosts the join token printed at --init admits
// (within its 24 hours): enough to build a cluster; tokens made later with
// `haven token create --role join` admit one host unless --uses says more.
const InitJoinUses = 16

// sourceIP is the address a request came from.
func sourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	if ip := net.ParseIP(host); ip != nil {
		if v4 := ip.To4(); v4 != nil {
			return v4.String()
		}
		return ip.String()
	}
	return host
}

// admit admits the host of req, which came from address from with join
// token tok: its certificate names only the node name, from, loopback
// addresses and what tok allows; the token is spent (its last use deletes
// it) before the host is registered.
func (a *Agent) admit(ctx context.Context, req api.JoinRequest, tok store.TokenRecord, from string) (*api.JoinResponse, error) {
	if !ValidNodeName(req.Node) {
		return nil, api.Errorf(http.StatusBadRequest, "node", "node name %q is not valid: use 1 to 63 lower-case letters, digits, '-', '_' or '.'", req.Node)
	}
	if req.Node == store.RootUser {
		// Its certificate (CN root) would be the store's administrator.
		return nil, api.Errorf(http.StatusBadRequest, "node", "node name %q is reserved for the store's administrator", req.Node)
	}
	if !validURL(req.APIAddr) {
		return nil, api.Errorf(http.StatusBadRequest, "api_addr", "api_addr %q is not an https://host:port URL", req.APIAddr)
	}
	cc, err := a.st.ClusterConfig(ctx)
	if err != nil {
		return nil, err
	}
	if cc.External && !req.External {
		return nil, api.Errorf(http.StatusBadRequest, "external", "cluster %q uses an external etcd: give the joining agent --store-endpoints (and --store-ca, --store-cert, --store-key)", cc.Name)
	}
	if !cc.External && req.External {
		return nil, api.Errorf(http.StatusBadRequest, "external", "cluster %q uses its embedded store: do not pass --store-endpoints when joining", cc.Name)
	}
	if _, err := a.st.Node(ctx, req.Node); err == nil {
		return nil, api.Errorf(http.StatusConflict, "node", "node name %q is in use in cluster %q: pick another --node, or remove the old one with `haven node remove %s`", req.Node, cc.Name, req.Node)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	ca, err := a.clusterCA(ctx)
	if err != nil {
		return nil, err
	}
	allowed := map[string]bool{from: true}
	for _, h := range tok.Allow {
		allowed[h] = true
	}
	allow := func(h string) bool {
		if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
			return true // every host is its own loopback
		}
		return allowed[h]
	}
	for _, u := range []string{req.APIAddr, req.PeerAddr, req.ClientAddr} {
		if u == "" {
			continue
		}
		if pu, err := url.Parse(u); err == nil && !allow(pu.Hostname()) {
			return nil, api.Errorf(http.StatusForbidden, "api_addr", "%s names %s, which is neither the address this join came from (%s) nor allowed by join token %s: make the token with --allow %s", u, pu.Hostname(), from, tok.ID, pu.Hostname())
		}
	}
	certPEM, dropped, err := ca.SignCSR([]byte(req.CSR), req.Node, allow, a.now())
	if err != nil {
		return nil, api.Errorf(http.StatusBadRequest, "csr", "%v", err)
	}
	if len(dropped) > 0 {
		a.log.Warn("join: addresses left out of the certificate", "op", "join", "joining", req.Node, "from", from, "dropped", dropped)
	}
	if !cc.External {
		// Its store user and roles, before it first connects (needed once
		// the store enforces its roles, harmless before); before the token
		// is spent, so that a failure here can be retried with it.
		if err := a.st.GrantHost(ctx, req.Node); err != nil {
			return nil, api.Errorf(http.StatusServiceUnavailable, "", "give %q its store user: %v; retry", req.Node, err)
		}
	}
	// Spend the token now: of two joins racing for its last use, one
	// fails here.
	if err := a.st.UseToken(ctx, tok.ID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, api.Errorf(http.StatusUnauthorized, "", "join token %s is used up or revoked: ask an admin for a new one (`haven token create --role join`)", tok.ID)
		}
		return nil, err
	}
	cert, _ := pki.ParseCert(certPEM)
	// During a CA rotation the new host trusts what the others trust now
	// (its agent catches up with the phases that follow).
	trust := ca.CertPEM
	if rot, _, err := a.st.CARotation(ctx); err == nil {
		trust = rot.Trust()
	}
	resp := &api.JoinResponse{Cluster: cc.Name, ClusterID: cc.ID, CACert: string(trust), Cert: string(certPEM), External: cc.External, StoreMembers: cc.StoreMembers}
	now := a.now().UTC()
	nrec := store.NodeRecord{Name: req.Node, APIAddr: req.APIAddr, CertSerial: cert.SerialNumber.Text(16), Registered: now}

	if !cc.External {
		members, err := a.st.Members(ctx)
		if err != nil {
			return nil, err
		}
		for _, m := range members {
			if m.Learner {
				return nil, api.Errorf(http.StatusServiceUnavailable, "", "another host is joining the store; retry in a few seconds")
			}
			if len(m.ClientURLs) > 0 {
				resp.StoreEndpoints = append(resp.StoreEndpoints, m.ClientURLs...)
			}
		}
		if len(members) < cc.StoreMembers {
			if !validURL(req.PeerAddr) || !validURL(req.ClientAddr) {
				return nil, api.Errorf(http.StatusBadRequest, "peer_addr", "a store member needs https peer_addr and client_addr URLs")
			}
			id, all, err := a.st.AddLearner(ctx, req.PeerAddr)
			if err != nil {
				return nil, api.Errorf(http.StatusServiceUnavailable, "", "add %q to the store: %v; retry", req.Node, err)
			}
			var parts []string
			for _, m := range all {
				name := m.Name
				if m.ID == id {
					name = req.Node
				}
				if name == "" {
					continue // another member that has not started yet
				}
				for _, u := range m.PeerURLs {
					parts = append(parts, name+"="+u)
				}
			}
			resp.Member, resp.MemberID, resp.InitialCluster = true, id, strings.Join(parts, ",")
			nrec.StoreMember, nrec.MemberID, nrec.PeerAddr, nrec.ClientAddr = true, id, req.PeerAddr, req.ClientAddr
		}
	}
	if err := a.st.RegisterNode(ctx, nrec, store.OpNodeLevel(nrec.Name, req.FeatureLevel)); err != nil {
		if resp.Member {
			_ = a.st.RemoveMember(context.WithoutCancel(ctx), resp.MemberID)
		}
		if errors.Is(err, store.ErrExists) {
			return nil, api.Errorf(http.StatusConflict, "node", "node name %q is in use; pick another --node", req.Node)
		}
		return nil, fmt.Errorf("register node %q: %w", req.Node, err)
	}
	// The new host gets the cluster secret key, wrapped for the key of the
	// certificate just signed. Should that fail, it asks when it starts.
	if err := a.st.GrantKey(ctx, req.Node, certPEM); err != nil {
		a.log.Warn("join: the cluster secret key not granted yet", "op", "join", "joining", req.Node, "err", err)
	}
	return resp, nil
}

func validURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "https" && u.Host != "" && u.Port() != ""
}
