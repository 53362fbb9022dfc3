package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/storage"
	"github.com/haven-ha/haven/internal/store"
)

// Pool is a storage pool as package storage defines it, stored under
// /haven/pools/<name>.
type Pool = storage.Pool

func (o *Ops) registerPools() {
	o.handle("GET", "/api/v1/pools", RoleViewer, o.handlePoolList)
	o.handle("POST", "/api/v1/pools", RoleAdmin, o.handlePoolCreate)
	o.handle("GET", "/api/v1/pools/{name}", RoleViewer, o.handlePoolGet)
	o.handle("DELETE", "/api/v1/pools/{name}", RoleAdmin, o.handlePoolDelete)
}

func (o *Ops) pool(ctx context.Context, name string) (Pool, error) {
	var p Pool
	resp, err := o.cl.Raw().Client().Get(ctx, cluster.PrefixPools+name)
	if err != nil {
		return p, fmt.Errorf("read pool %q: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return p, fmt.Errorf("pool %q: %w", name, cluster.ErrNotFound)
	}
	if err := store.Decode(string(resp.Kvs[0].Key), resp.Kvs[0].Value, &p); err != nil {
		return p, fmt.Errorf("decode pool %q: %w", name, err)
	}
	return p, nil
}

func (o *Ops) pools(ctx context.Context) ([]Pool, error) {
	resp, err := o.cl.Raw().Client().Get(ctx, cluster.PrefixPools, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	out := make([]Pool, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var p Pool
		if err := store.Decode(string(kv.Key), kv.Value, &p); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func (o *Ops) handlePoolList(w http.ResponseWriter, r *http.Request) {
	ps, err := o.pools(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, ps)
}

func (o *Ops) handlePoolGet(w http.ResponseWriter, r *http.Request) {
	p, err := o.pool(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, notFoundAs(err, "name", "no storage pool named %q", r.PathValue("name")))
		return
	}
	WriteJSON(w, http.StatusOK, p)
}

// checkPool validates a pool, naming the first field at fault.
func checkPool(p Pool) error {
	if err := p.Validate(); err != nil {
		return fieldError(err)
	}
	return nil
}

func (o *Ops) handlePoolCreate(w http.ResponseWriter, r *http.Request) {
	var p Pool
	if err := decodeBody(w, r, &p, false); err != nil {
		WriteError(w, err)
		return
	}
	if err := checkPool(p); err != nil {
		WriteError(w, err)
		return
	}
	key := cluster.PrefixPools + p.Name
	resp, err := o.cl.Raw().Client().Txn(r.Context()).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, store.MustEncode(key, p))).Commit()
	if err != nil {
		writeErr(w, fmt.Errorf("create pool %q: %w", p.Name, err))
		return
	}
	if !resp.Succeeded {
		WriteError(w, Errorf(http.StatusConflict, "name", "a storage pool named %q already exists", p.Name))
		return
	}
	where := p.Path
	if p.Kind == storage.KindLVM {
		where = "volume group " + p.VG
	}
	o.audit(r, "", "", "created storage pool %s (%s, shared %v)", p.Name, where, p.Shared)
	WriteJSON(w, http.StatusCreated, p)
}

// handlePoolDelete removes a pool no guest's disk uses.
func (o *Ops) handlePoolDelete(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	if _, err := o.pool(ctx, name); err != nil {
		writeErr(w, notFoundAs(err, "name", "no storage pool named %q", name))
		return
	}
	users, rev, err := o.guestsWhere(ctx, func(g cluster.Guest) bool {
		for _, d := range g.Def.Disks {
			if d.Pool == name {
				return true
			}
		}
		return false
	})
	if err != nil {
		writeErr(w, err)
		return
	}
	if len(users) > 0 {
		WriteError(w, Errorf(http.StatusConflict, "name", "storage pool %q is used by guests %s: move their disks first", name, strings.Join(users, ", ")))
		return
	}
	if err := o.deleteIfGuestsUnchanged(ctx, cluster.PrefixPools+name, rev); err != nil {
		writeErr(w, fmt.Errorf("delete pool %q: %w", name, err))
		return
	}
	o.audit(r, "", "", "deleted storage pool %s", name)
	w.WriteHeader(http.StatusNoContent)
}

// notFoundAs replaces a not-found error by a 404 naming field.
func notFoundAs(err error, field, format string, a ...any) error {
	if e := apiError(err); e != nil {
		if ae, ok := e.(*Error); ok && ae.Status == http.StatusNotFound {
			return Errorf(http.StatusNotFound, field, format, a...)
		}
		return e
	}
	return nil
}
