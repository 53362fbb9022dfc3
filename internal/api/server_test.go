package api_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

type fixture struct {
	srv    *api.Server
	url    string
	tokens map[string]string // by role
	now    time.Time
}

func setup(t *testing.T) *fixture {
	t.Helper()
	ts := storetest.Start(t)
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ca, err := pki.NewCA("c", now)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{tokens: map[string]string{}, now: now}
	var recs []store.TokenRecord
	for _, r := range []store.Role{store.RoleAdmin, store.RoleOperator, store.RoleViewer, store.RoleJoin} {
		tok := pki.NewAPIToken()
		recs = append(recs, store.TokenRecord{ID: tok.ID, Hash: tok.Hash(), Role: r, Created: now})
		f.tokens[string(r)] = tok.String()
	}
	exp := pki.NewAPIToken()
	recs = append(recs, store.TokenRecord{ID: exp.ID, Hash: exp.Hash(), Role: store.RoleAdmin, Created: now, Expires: now.Add(-time.Second)})
	f.tokens["expired"] = exp.String()
	f.tokens["wrong"] = pki.Token{ID: recs[0].ID, Secret: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}.String()
	if err := ts.Store.InitCluster(ctx, store.ClusterConfig{Name: "c", ID: "id1", StoreMembers: 3}, ca.CertPEM, ca.KeyPEM, recs...); err != nil {
		t.Fatal(err)
	}
	if err := ts.Store.RegisterNode(ctx, store.NodeRecord{Name: "n1", APIAddr: "https://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if err := ts.Store.RegisterNode(ctx, store.NodeRecord{Name: "n2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Store.StartLiveness(ctx, model.NodeFacts{Name: "n1", CPUs: 4}, 5*time.Second, time.Second); err != nil {
		t.Fatal(err)
	}
	f.srv = api.New(api.Config{Store: ts.Store, Node: "n1", Now: func() time.Time { return now }})
	f.srv.HandleFunc("POST", "/api/v1/test/operate", api.RoleOperator, func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			N int `json:"n"`
		}
		if err := api.DecodeJSON(w, r, &body); err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, map[string]any{"n": body.N, "caller": api.Caller(r).Role})
	})
	hs := httptest.NewServer(f.srv.Handler())
	t.Cleanup(hs.Close)
	f.url = hs.URL
	return f
}

func (f *fixture) client(token string) *client.Client { return client.New(f.url, token, nil) }

func TestAuthAndRoles(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	for _, tt := range []struct {
		token, method, path string
		body                string
		want                int
	}{
		{"viewer", "GET", "/api/v1/status", "", 200},
		{"operator", "GET", "/api/v1/nodes", "", 200},
		{"", "GET", "/api/v1/status", "", 401},
		{"wrong", "GET", "/api/v1/status", "", 401},
		{"expired", "GET", "/api/v1/status", "", 401},
		{"join", "GET", "/api/v1/status", "", 403},
		{"viewer", "POST", "/api/v1/test/operate", `{"n":1}`, 403},
		{"operator", "POST", "/api/v1/test/operate", `{"n":1}`, 200},
		{"admin", "POST", "/api/v1/test/operate", `{"n":1}`, 200},
		{"operator", "POST", "/api/v1/test/operate", `{"n":"x"}`, 400},
		{"operator", "POST", "/api/v1/test/operate", `{"m":1}`, 400},
		{"operator", "POST", "/api/v1/test/operate", ``, 400},
		{"operator", "POST", "/api/v1/test/operate", `{"n":1` + strings.Repeat(" ", api.MaxBodyBytes) + `}`, 413},
		{"operator", "POST", "/api/v1/tokens", `{"role":"viewer"}`, 403},
		{"admin", "POST", "/api/v1/tokens", `{"role":"root"}`, 400},
		{"admin", "POST", "/api/v1/tokens", `{"role":"viewer","ttl":"-1h"}`, 400},
		{"admin", "POST", "/api/v1/tokens", `{"role":"viewer"}`, 201},
		{"admin", "GET", "/api/v1/nodes/n9", "", 404},
		{"admin", "DELETE", "/api/v1/nodes/n1", "", 409},
		{"admin", "GET", "/api/v1/nope", "", 404},
		{"admin", "PUT", "/api/v1/status", "", 405},
	} {
		t.Run(tt.token+" "+tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx, tt.method, f.url+tt.path, strings.NewReader(tt.body))
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+f.tokens[tt.token])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if ct := resp.Header.Get("Content-Type"); tt.want != 204 && ct != "application/json" {
				t.Fatalf("content type %q", ct)
			}
		})
	}
}

func TestStatusAndNodes(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.srv.AddStatusHook(func(ctx context.Context, st *api.Status) error {
		st.Guests = &api.GuestSummary{Total: 7}
		return nil
	})
	st, err := f.client(f.tokens["viewer"]).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Cluster != "c" || st.ClusterID != "id1" || st.Node != "n1" {
		t.Fatalf("status %+v", st)
	}
	if len(st.Hosts) != 2 || st.Hosts[0].State != api.HostOnline || st.Hosts[1].State != api.HostOffline {
		t.Fatalf("hosts %+v", st.Hosts)
	}
	if st.Hosts[0].Facts == nil || st.Hosts[0].Facts.CPUs != 4 {
		t.Fatalf("facts %+v", st.Hosts[0].Facts)
	}
	if st.Guests == nil || st.Guests.Total != 7 {
		t.Fatalf("status hook not applied: %+v", st.Guests)
	}
	ns, err := f.client(f.tokens["viewer"]).Nodes(ctx)
	if err != nil || len(ns) != 2 || !ns[0].Online || ns[1].Online {
		t.Fatalf("nodes %+v %v", ns, err)
	}
	// Tokens created through the API work and expire.
	tr, err := f.client(f.tokens["admin"]).CreateToken(ctx, api.TokenRequest{Role: store.RoleViewer, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Expires.Equal(f.now.Add(time.Hour)) {
		t.Fatalf("expires %v", tr.Expires)
	}
	if _, err := f.client(tr.Token).Status(ctx); err != nil {
		t.Fatalf("new token: %v", err)
	}
	if err := f.client(f.tokens["admin"]).RevokeToken(ctx, tr.ID); err != nil {
		t.Fatal(err)
	}
	_, err = f.client(tr.Token).Status(ctx)
	if !client.IsStatus(err, 401) {
		t.Fatalf("revoked token: %v", err)
	}
	jt, err := f.client(f.tokens["admin"]).CreateToken(ctx, api.TokenRequest{Role: store.RoleJoin})
	if err != nil || !strings.HasPrefix(jt.Token, "hvj.") || !jt.Expires.Equal(f.now.Add(api.DefaultJoinTokenTTL)) {
		t.Fatalf("join token %+v %v", jt, err)
	}
	// Errors carry a message and a field.
	_, err = f.client(f.tokens["admin"]).CreateToken(ctx, api.TokenRequest{Role: "root"})
	var ae *api.Error
	if !errorsAs(err, &ae) || ae.Field != "role" || ae.Status != 400 {
		t.Fatalf("error %#v", err)
	}
}

func errorsAs(err error, target **api.Error) bool {
	e, ok := err.(*api.Error)
	if ok {
		*target = e
	}
	return ok
}

// TestStatusUnreachableHostsAndPeers: a host whose lease still runs but
// whose API does not answer is marked unreachable, and so is the manager
// on it, within a bounded time; every answer names the hosts' API URLs.
func TestStatusUnreachableHostsAndPeers(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	st := f.srv.Store()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "https://" + ln.Addr().String()
	ln.Close() // nothing listens: the host is "dead"
	live := httptest.NewServer(http.NotFoundHandler())
	defer live.Close()
	liveURL := strings.Replace(live.URL, "http://", "https://", 1)
	for name, u := range map[string]string{"n3": deadURL, "n4": liveURL} {
		if err := st.RegisterNode(ctx, store.NodeRecord{Name: name, APIAddr: u}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.StartLiveness(ctx, model.NodeFacts{Name: name}, 5*time.Second, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Campaign(ctx, "n3", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var out api.Status
	resp, err := http.DefaultClient.Do(mustReq(t, f.url+"/api/v1/status", f.tokens["viewer"]))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("status took %v with a dead host; want under 1 s", took)
	} else {
		t.Logf("status answered in %v with a dead host", took)
	}
	got := map[string]api.Host{}
	for _, h := range out.Hosts {
		got[h.Name] = h
	}
	if !got["n3"].Unreachable || got["n4"].Unreachable || got["n1"].Unreachable {
		t.Errorf("unreachable: n3 %v (want true), n4 %v, n1 %v (want false)", got["n3"].Unreachable, got["n4"].Unreachable, got["n1"].Unreachable)
	}
	if out.Manager != "n3" || !out.ManagerUnreachable {
		t.Errorf("manager %q unreachable %v; want n3, true", out.Manager, out.ManagerUnreachable)
	}
	peers := resp.Header.Get(api.PeersHeader)
	for _, u := range []string{deadURL, liveURL, "https://127.0.0.1:1"} {
		if !strings.Contains(peers, u) {
			t.Errorf("%s %q lacks %s", api.PeersHeader, peers, u)
		}
	}
}

func mustReq(t *testing.T, url, token string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}
