package api

import (
	"errors"
	"net/http"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/model"
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

func (o *Ops) handleDomainDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := o.cl.DeleteDomain(r.Context(), name); err != nil {
		if errors.Is(err, cluster.ErrNotFound) {
			err = Errorf(http.StatusNotFound, "name", "no failover domain named %q", name)
		}
		writeErr(w, err)
		return
	}
	o.audit(r, "", "", "deleted failover domain %s", name)
	w.WriteHeader(http.StatusNoContent)
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
	if err := decodeBody(w, r, &p, false); err != nil {
		WriteError(w, err)
		return
	}
	if err := o.cl.SetPolicy(r.Context(), p); err != nil {
		writeErr(w, err)
		return
	}
	o.audit(r, "", "", "set cluster policy: fencing %s, shutdown policy %s", p.Fencing, p.ShutdownPolicy)
	WriteJSON(w, http.StatusOK, p)
}
