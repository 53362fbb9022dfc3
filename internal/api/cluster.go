package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

// DefaultJoinTokenTTL is the lifetime of a join token created without a TTL.
const DefaultJoinTokenTTL = 24 * time.Hour

// MaxJoinUses bounds how many hosts one join token admits.
const MaxJoinUses = 1000

func (s *Server) registerCluster() {
	s.HandleFunc("GET", "/api/v1/status", RoleViewer, s.handleStatus)
	s.HandleFunc("GET", "/api/v1/nodes", RoleViewer, s.handleNodes)
	s.HandleFunc("GET", "/api/v1/nodes/{name}", RoleViewer, s.handleNode)
	s.HandleFunc("DELETE", "/api/v1/nodes/{name}", RoleAdmin, s.handleNodeDelete)
	s.HandleFunc("POST", "/api/v1/tokens", RoleAdmin, s.handleTokenCreate)
	s.HandleFunc("GET", "/api/v1/tokens", RoleAdmin, s.handleTokenList)
	s.HandleFunc("DELETE", "/api/v1/tokens/{id}", RoleAdmin, s.handleTokenDelete)
}

// quorumWait bounds a quorum read before status falls back to what the
// nearest store member knows.
const quorumWait = time.Second

// BuildStatus computes the cluster status from the store and runs the
// status hooks. When the store has no quorum it answers from the nearest
// member's possibly stale data, with Stale set, Quorum.OK false and hosts
// other than this one in state "unknown".
func (s *Server) BuildStatus(ctx context.Context) (*Status, error) {
	st, err := s.buildStatusQuorum(ctx)
	if err == nil {
		s.markUnreachable(ctx, st)
	}
	return st, err
}

// probeTimeout bounds the connection to another host's API that tells
// whether it is reachable.
const probeTimeout = 250 * time.Millisecond

// markUnreachable probes, in parallel, the API of every other host that
// counts as online, and marks those that do not accept a connection.
func (s *Server) markUnreachable(ctx context.Context, st *Status) {
	var wg sync.WaitGroup
	for i := range st.Hosts {
		h := &st.Hosts[i]
		if h.Name == s.cfg.Node || (h.State != HostOnline && h.State != HostUnknown) || h.APIAddr == "" {
			continue
		}
		u, err := url.Parse(h.APIAddr)
		if err != nil || u.Host == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{Timeout: probeTimeout}
			c, err := d.DialContext(ctx, "tcp", u.Host)
			if err != nil {
				h.Unreachable = true
				return
			}
			c.Close()
		}()
	}
	wg.Wait()
	for _, h := range st.Hosts {
		if h.Manager && h.Unreachable {
			st.ManagerUnreachable = true
		}
	}
}

func (s *Server) buildStatusQuorum(ctx context.Context) (*Status, error) {
	qctx, cancel := context.WithTimeout(ctx, quorumWait)
	out, err := s.buildStatus(qctx)
	cancel()
	if err == nil || ctx.Err() != nil || errors.Is(err, store.ErrNotFound) {
		return out, err
	}
	stale, err2 := s.buildStatus(store.Serializable(ctx))
	if err2 != nil {
		return nil, Errorf(http.StatusServiceUnavailable, "", "the store does not answer: %v", err)
	}
	stale.Stale = true
	stale.Quorum.Online = probeMembers(ctx, s.cfg.Store, stale.Store.Members)
	stale.Quorum.OK = false
	for i := range stale.Hosts {
		if stale.Hosts[i].Name != s.cfg.Node {
			stale.Hosts[i].State = HostUnknown
			stale.Hosts[i].Since = time.Time{}
		}
	}
	return stale, nil
}

func (s *Server) buildStatus(ctx context.Context) (*Status, error) {
	st := s.cfg.Store
	cc, err := st.ClusterConfig(ctx)
	if err != nil {
		return nil, err
	}
	regs, err := st.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	live, _, err := st.LiveNodes(ctx)
	if err != nil {
		return nil, err
	}
	states, err := st.NodeStates(ctx)
	if err != nil {
		return nil, err
	}
	members, err := st.Members(ctx)
	if err != nil {
		return nil, err
	}
	out := &Status{Cluster: cc.Name, ClusterID: cc.ID, Node: s.cfg.Node, Time: s.now().UTC(), Hosts: []Host{}}
	mgr, term, err := st.Manager(ctx)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	out.Manager, out.ManagerTerm = mgr, term
	// Read like the others: serializable when the status falls back to
	// this member's own data (no quorum).
	var popts []clientv3.OpOption
	if store.IsSerializable(ctx) {
		popts = append(popts, clientv3.WithSerializable())
	}
	presp, err := st.Client().Get(ctx, store.KeyPolicy, popts...)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", store.KeyPolicy, err)
	}
	if len(presp.Kvs) == 1 {
		var p struct {
			Hold bool `json:"hold"`
		}
		if err := json.Unmarshal(presp.Kvs[0].Value, &p); err == nil {
			out.Hold = p.Hold
		}
	}
	if mi, err := st.ManagerInfo(ctx); err == nil && mi.Rev == term && term != 0 {
		out.ManagerSince = mi.Since
	}
	role := map[string]string{}
	for _, m := range members {
		if m.Learner {
			role[m.Name] = "learner"
		} else {
			role[m.Name] = "voter"
		}
	}
	seen := map[string]bool{}
	for _, r := range regs {
		seen[r.Name] = true
		out.Hosts = append(out.Hosts, s.host(r, live, states, role, mgr))
	}
	// A live node without registration (should not happen) still shows.
	for name := range live {
		if !seen[name] {
			out.Hosts = append(out.Hosts, s.host(store.NodeRecord{Name: name}, live, states, role, mgr))
		}
	}
	sort.Slice(out.Hosts, func(i, j int) bool { return out.Hosts[i].Name < out.Hosts[j].Name })
	facts := make([]model.NodeFacts, 0, len(live))
	for _, h := range out.Hosts {
		if h.Facts != nil {
			facts = append(facts, *h.Facts)
		}
	}
	features := model.ClusterFeatures(facts)
	out.Features = &features
	form, err := st.FenceForm(ctx)
	if err != nil {
		return nil, err
	}
	out.FenceForm = &form

	out.Store = StoreInfo{External: cc.External, Members: members, Roles: cc.StoreRoles}
	for _, m := range members {
		if !m.Learner {
			out.Quorum.Voters++
		}
	}
	if cc.External {
		out.Quorum.Online = probeMembers(ctx, st, members)
	} else {
		for _, m := range members {
			if _, ok := live[m.Name]; ok && !m.Learner {
				out.Quorum.Online++
			}
		}
	}
	out.Quorum.Needed = out.Quorum.Voters/2 + 1
	out.Quorum.OK = out.Quorum.Online >= out.Quorum.Needed

	s.mu.Lock()
	hooks := append([]StatusHook(nil), s.hooks...)
	s.mu.Unlock()
	for _, h := range hooks {
		hctx, cancel := context.WithTimeout(ctx, quorumWait)
		err := h(hctx, out)
		cancel()
		if err != nil {
			s.log.Warn("status hook failed", "op", "status", "err", err)
		}
	}
	return out, nil
}

func (s *Server) host(r store.NodeRecord, live map[string]model.NodeFacts, states map[string]store.NodeState, role map[string]string, mgr string) Host {
	h := Host{Name: r.Name, State: HostOffline, Manager: r.Name == mgr, APIAddr: r.APIAddr, StoreRole: role[r.Name]}
	h.StoreMember = h.StoreRole != ""
	f, online := live[r.Name]
	if online {
		h.State = HostOnline
		h.Facts = &f
		if h.APIAddr == "" {
			h.APIAddr = f.APIAddr
		}
	}
	if ns, ok := states[r.Name]; ok && ns.Online == online {
		h.Since = ns.Since
	} else if online {
		h.Since = f.Since
	}
	return h
}

// probeMembers counts external store members that answer a status call.
func probeMembers(ctx context.Context, st *store.Store, members []store.Member) int {
	var mu sync.Mutex
	var wg sync.WaitGroup
	n := 0
	for _, m := range members {
		if m.Learner || len(m.ClientURLs) == 0 {
			continue
		}
		wg.Add(1)
		go func(ep string) {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			if _, err := st.Client().Status(cctx, ep); err == nil {
				mu.Lock()
				n++
				mu.Unlock()
			}
		}(m.ClientURLs[0])
	}
	wg.Wait()
	return n
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.BuildStatus(r.Context())
	if err != nil {
		WriteError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, st)
}

func (s *Server) nodes(ctx context.Context) ([]Node, error) {
	regs, err := s.cfg.Store.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	live, _, err := s.cfg.Store.LiveNodes(ctx)
	if err != nil {
		return nil, err
	}
	states, err := s.cfg.Store.NodeStates(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Node, 0, len(regs))
	for _, r := range regs {
		n := Node{NodeRecord: r}
		if f, ok := live[r.Name]; ok {
			n.Online, n.Facts = true, &f
		}
		if ns, ok := states[r.Name]; ok && ns.Online == n.Online {
			n.Since = ns.Since
		} else if n.Facts != nil {
			n.Since = n.Facts.Since
		}
		out = append(out, n)
	}
	return out, nil
}

func (s *Server) handleNodes(w http.ResponseWriter, r *http.Request) {
	ns, err := s.nodes(r.Context())
	if err != nil {
		WriteError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, ns)
}

func (s *Server) handleNode(w http.ResponseWriter, r *http.Request) {
	ns, err := s.nodes(r.Context())
	if err != nil {
		WriteError(w, err)
		return
	}
	name := r.PathValue("name")
	for _, n := range ns {
		if n.Name == name {
			WriteJSON(w, http.StatusOK, n)
			return
		}
	}
	WriteError(w, Errorf(http.StatusNotFound, "name", "no node named %q", name))
}

// handleNodeDelete forgets an offline node: its registration and, if it
// was a store member, its membership. The name can then be joined again.
func (s *Server) handleNodeDelete(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	rec, err := s.cfg.Store.Node(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		WriteError(w, Errorf(http.StatusNotFound, "name", "no node named %q", name))
		return
	} else if err != nil {
		WriteError(w, err)
		return
	}
	live, _, err := s.cfg.Store.LiveNodes(ctx)
	if err != nil {
		WriteError(w, err)
		return
	}
	if _, ok := live[name]; ok {
		WriteError(w, Errorf(http.StatusConflict, "name", "node %q is online; stop its agent first", name))
		return
	}
	members, err := s.cfg.Store.Members(ctx)
	if err != nil {
		WriteError(w, err)
		return
	}
	for _, m := range members {
		if m.Name == name || (rec.MemberID != 0 && m.ID == rec.MemberID) {
			if err := s.cfg.Store.RemoveMember(ctx, m.ID); err != nil {
				WriteError(w, err)
				return
			}
		}
	}
	// Its store user goes (the embedded store's; an external etcd's users
	// are its operator's): even a store that has not read the revocation
	// list yet gives its certificate nothing once the roles are enforced.
	if cc, err := s.cfg.Store.ClusterConfig(ctx); err != nil {
		WriteError(w, err)
		return
	} else if !cc.External {
		if err := s.cfg.Store.RevokeHost(ctx, name); err != nil {
			WriteError(w, err)
			return
		}
	}
	// The host's certificate is revoked (the store and every agent refuse
	// it from now on) and its tokens (its local admin token) deleted.
	for _, serial := range append([]string{rec.CertSerial}, rec.PrevSerials...) {
		if serial == "" {
			continue
		}
		if err := s.cfg.Store.Revoke(ctx, store.Revocation{Serial: serial, Node: name, Revoked: s.now().UTC()}); err != nil {
			WriteError(w, err)
			return
		}
	}
	if err := s.cfg.Store.DeleteNodeTokens(ctx, name); err != nil {
		WriteError(w, err)
		return
	}
	// A new cluster secret key, wrapped for the hosts left: the removed
	// host's copy no longer opens the CA key or the fence secrets. On
	// failure the host stays registered, so removing it again retries.
	keyID, err := s.cfg.Store.RotateSecretKey(ctx, name)
	if err != nil {
		WriteError(w, err)
		return
	}
	if err := s.cfg.Store.DeleteNode(ctx, name); err != nil {
		WriteError(w, err)
		return
	}
	s.log.Info("node removed", "op", "node", "node", name, "revoked_cert", rec.CertSerial, "secret_key", keyID, "by", callerName(r))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleTokenCreate(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		WriteError(w, err)
		return
	}
	resp, err := s.CreateToken(r.Context(), req)
	if err != nil {
		WriteError(w, err)
		return
	}
	WriteJSON(w, http.StatusCreated, resp)
}

// CreateToken makes and stores a new token.
func (s *Server) CreateToken(ctx context.Context, req TokenRequest) (*TokenResponse, error) {
	if !req.Role.Valid() {
		return nil, Errorf(http.StatusBadRequest, "role", "unknown role %q; use admin, operator, viewer or join", req.Role)
	}
	if len(req.Name) > 128 {
		return nil, Errorf(http.StatusBadRequest, "name", "name longer than 128 characters")
	}
	now := s.now().UTC()
	var expires time.Time
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return nil, Errorf(http.StatusBadRequest, "ttl", "ttl %q is not a positive duration such as 24h", req.TTL)
		}
		expires = now.Add(d)
	} else if req.Role == store.RoleJoin {
		expires = now.Add(DefaultJoinTokenTTL)
	}
	if req.Role == store.RoleJoin {
		if req.Uses == 0 {
			req.Uses = 1
		}
		if req.Uses < 1 || req.Uses > MaxJoinUses {
			return nil, Errorf(http.StatusBadRequest, "uses", "uses %d: a join token admits 1 to %d hosts", req.Uses, MaxJoinUses)
		}
		if len(req.Allow) > 64 {
			return nil, Errorf(http.StatusBadRequest, "allow", "at most 64 allowed addresses")
		}
		for _, a := range req.Allow {
			if !pki.ValidHostName(a) {
				return nil, Errorf(http.StatusBadRequest, "allow", "%q is not an IP address or DNS name", a)
			}
		}
	} else if req.Uses != 0 || len(req.Allow) > 0 {
		return nil, Errorf(http.StatusBadRequest, "uses", "uses and allow are for join tokens only")
	}
	var tok pki.Token
	if req.Role == store.RoleJoin {
		caPEM, err := s.cfg.Store.CACert(ctx)
		if err != nil {
			return nil, err
		}
		ca, err := pki.ParseCert(caPEM)
		if err != nil {
			return nil, err
		}
		tok = pki.NewJoinToken(pki.Fingerprint(ca))
	} else {
		tok = pki.NewAPIToken()
	}
	rec := store.TokenRecord{ID: tok.ID, Hash: tok.Hash(), Role: req.Role, Name: req.Name, Created: now, Expires: expires, Uses: req.Uses, Allow: req.Allow}
	if err := s.cfg.Store.PutToken(ctx, rec); err != nil {
		return nil, err
	}
	return &TokenResponse{Token: tok.String(), ID: tok.ID, Role: req.Role, Name: req.Name, Expires: expires, Uses: req.Uses}, nil
}

func (s *Server) handleTokenList(w http.ResponseWriter, r *http.Request) {
	recs, err := s.cfg.Store.Tokens(r.Context())
	if err != nil {
		WriteError(w, err)
		return
	}
	out := make([]TokenInfo, 0, len(recs))
	for _, t := range recs {
		out = append(out, TokenInfo{ID: t.ID, Role: t.Role, Name: t.Name, Created: t.Created, Expires: t.Expires, Uses: t.Uses, Node: t.Node})
	}
	WriteJSON(w, http.StatusOK, out)
}

func (s *Server) handleTokenDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if c := Caller(r); c != nil && c.ID == id {
		WriteError(w, Errorf(http.StatusConflict, "id", "refusing to revoke the token this request uses"))
		return
	}
	if err := s.cfg.Store.DeleteToken(r.Context(), id); err != nil {
		WriteError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
