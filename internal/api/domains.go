package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store"
)

// DomainInfo is a failover domain with the guests that use it.
type DomainInfo struct {
	model.Domain
	Guests []string `json:"guests"`
}

func (o *Ops) registerDomains() {
	o.handle("GET", "/api/v1/domains", RoleViewer, o.handleDomainList)
	o.handle("POST", "/api/v1/domains", RoleAdmin, o.handleDomainCreate)
	o.handle("GET", "/api/v1/domains/{name}", RoleViewer, o.handleDomainGet)
	o.handle("PUT", "/api/v1/domains/{name}", RoleAdmin, o.handleDomainEdit)
	o.handle("DELETE", "/api/v1/domains/{name}", RoleAdmin, o.handleDomainDelete)
}

func (o *Ops) domainInfos(r *http.Request) ([]DomainInfo, error) {
	ds, err := o.cl.Domains(r.Context())
	if err != nil {
		return nil, err
	}
	gs, err := o.cl.Guests(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]DomainInfo, 0, len(ds))
	for _, d := range ds {
		di := DomainInfo{Domain: d, Guests: []string{}}
		for _, g := range gs {
			if g.Spec.Domain == d.Name {
				di.Guests = append(di.Guests, g.Spec.Name)
			}
		}
		out = append(out, di)
	}
	return out, nil
}

func (o *Ops) handleDomainList(w http.ResponseWriter, r *http.Request) {
	ds, err := o.domainInfos(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, ds)
}

func (o *Ops) handleDomainGet(w http.ResponseWriter, r *http.Request) {
	ds, err := o.domainInfos(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	name := r.PathValue("name")
	for _, d := range ds {
		if d.Name == name {
			WriteJSON(w, http.StatusOK, d)
			return
		}
	}
	WriteError(w, Errorf(http.StatusNotFound, "name", "no failover domain named %q: see `haven domain list`", name))
}

func (o *Ops) handleDomainCreate(w http.ResponseWriter, r *http.Request) {
	var d model.Domain
	if err := decodeBody(w, r, &d, false); err != nil {
		WriteError(w, err)
		return
	}
	if err := o.cl.PutDomain(r.Context(), d, true); err != nil {
		writeErr(w, err)
		return
	}
	o.audit(r, "", "", "created failover domain %s", d.Name)
	WriteJSON(w, http.StatusCreated, DomainInfo{Domain: d, Guests: []string{}})
}

func (o *Ops) handleDomainEdit(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	cur, err := o.cl.Domain(r.Context(), name)
	if errors.Is(err, cluster.ErrNotFound) {
		WriteError(w, Errorf(http.StatusNotFound, "name", "no failover domain named %q", name))
		return
	} else if err != nil {
		writeErr(w, err)
		return
	}
	d := cur
	d.Members = nil
	if err := decodeBody(w, r, &d, false); err != nil {
		WriteError(w, err)
		return
	}
	if d.Members == nil {
		d.Members = cur.Members
	}
	if d.Name != name {
		WriteError(w, Errorf(http.StatusBadRequest, "name", "a domain cannot be renamed (from %q to %q): create a new one", name, d.Name))
		return
	}
	if err := o.cl.PutDomain(r.Context(), d, false); err != nil {
		writeErr(w, err)
		return
	}
	o.audit(r, "", "", "edited failover domain %s", name)
	ds, err := o.domainInfos(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	for _, x := range ds {
		if x.Name == name {
			WriteJSON(w, http.StatusOK, x)
			return
		}
	}
	WriteJSON(w, http.StatusOK, DomainInfo{Domain: d, Guests: []string{}})
}

// handleDomainDelete removes a domain no guest uses. The delete is
// conditional on no guest record having changed since the check, so a
// guest created in the domain meanwhile makes it fail instead of leaving
// the guest with a domain that is gone.
func (o *Ops) handleDomainDelete(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	if _, err := o.cl.Domain(ctx, name); errors.Is(err, cluster.ErrNotFound) {
		WriteError(w, Errorf(http.StatusNotFound, "name", "no failover domain named %q", name))
		return
	} else if err != nil {
		writeErr(w, err)
		return
	}
	users, rev, err := o.guestsWhere(ctx, func(g cluster.Guest) bool { return g.Spec.Domain == name })
	if err != nil {
		writeErr(w, err)
		return
	}
	if len(users) > 0 {
		WriteError(w, Errorf(http.StatusConflict, "name", "failover domain %q is used by guests %s: move them to another domain first", name, strings.Join(users, ", ")))
		return
	}
	if err := o.deleteIfGuestsUnchanged(ctx, cluster.KeyDomain(name), rev); err != nil {
		writeErr(w, fmt.Errorf("delete domain %q: %w", name, err))
		return
	}
	o.audit(r, "", "", "deleted failover domain %s", name)
	w.WriteHeader(http.StatusNoContent)
}

// guestsWhere lists the guests matching keep, with the store revision read.
func (o *Ops) guestsWhere(ctx context.Context, keep func(cluster.Guest) bool) ([]string, int64, error) {
	resp, err := o.cl.Raw().Client().Get(ctx, cluster.PrefixGuests, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list guests: %w", err)
	}
	var names []string
	for _, kv := range resp.Kvs {
		var g cluster.Guest
		if err := store.Decode(string(kv.Key), kv.Value, &g); err != nil {
			return nil, 0, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		if keep(g) {
			names = append(names, g.Spec.Name)
		}
	}
	return names, resp.Header.Revision, nil
}

// deleteIfGuestsUnchanged deletes key if no guest record was created or
// changed after rev; otherwise it answers 409.
func (o *Ops) deleteIfGuestsUnchanged(ctx context.Context, key string, rev int64) error {
	resp, err := o.cl.Raw().Client().Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(cluster.PrefixGuests).WithPrefix(), "<", rev+1)).
		Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return Errorf(http.StatusConflict, "name", "guests changed while checking that none uses it: retry")
	}
	return nil
}

// policy

func (o *Ops) registerPolicy() {
	o.handle("GET", "/api/v1/policy", RoleViewer, o.handlePolicyGet)
	o.handle("PUT", "/api/v1/policy", RoleAdmin, o.handlePolicyPut)
}

func (o *Ops) handlePolicyGet(w http.ResponseWriter, r *http.Request) {
	p, err := o.cl.Policy(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	c := p.EffectiveCapacity()
	p.Capacity = &c // the defaults, when never set
	WriteJSON(w, http.StatusOK, p)
}

// handlePolicyPut changes the fields the body gives; the others keep their
// values.
func (o *Ops) handlePolicyPut(w http.ResponseWriter, r *http.Request) {
	p, err := o.cl.Policy(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	// A capacity object in the body changes the fields it gives; the
	// others keep their values (the defaults when never set).
	c := p.EffectiveCapacity()
	p.Capacity = &c
	if err := decodeBody(w, r, &p, false); err != nil {
		WriteError(w, err)
		return
	}
	if len(p.Rules) > 0 {
		guests, err := o.cl.Guests(r.Context())
		if err != nil {
			writeErr(w, err)
			return
		}
		known := map[string]bool{}
		for _, g := range guests {
			known[g.Spec.Name] = true
		}
		if err := model.CheckRules(p.Rules, func(g string) bool { return known[g] }, nil); err != nil {
			WriteError(w, Errorf(http.StatusBadRequest, "rules", "%v", err))
			return
		}
	}
	if err := o.cl.SetPolicy(r.Context(), p); err != nil {
		writeErr(w, err)
		return
	}
	o.audit(r, "", "", "set cluster policy: fencing %s, shutdown policy %s, quorum loss %s, preemption %s, %s, %d affinity rules, hold %s, %s", p.Fencing, p.ShutdownPolicy, p.QuorumLoss, onOff(p.Preemption), p.Reserve, len(p.Rules), onOff(p.Hold), p.EffectiveCapacity())
	WriteJSON(w, http.StatusOK, p)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
