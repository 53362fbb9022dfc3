package api

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/guestdef"
)

// VolumeRequest is the body of POST /api/v1/pools/{name}/volumes.
type VolumeRequest struct {
	Name   string `json:"name"`
	Size   Size   `json:"size"`
	Format string `json:"format"` // qcow2 (default) or raw; LVM volumes are raw
}

// Volume answers a volume creation.
type Volume struct {
	Pool   string `json:"pool"`
	Name   string `json:"name"`
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	Format string `json:"format"`
}

// PoolHealthRow is one host's latest check of a pool.
type PoolHealthRow = cluster.PoolHealth

func (o *Ops) registerVolumes() {
	o.handle("POST", "/api/v1/pools/{name}/volumes", RoleAdmin, o.handleVolumeCreate)
	o.handle("GET", "/api/v1/pools/{name}/health", RoleViewer, o.handlePoolHealth)
}

// handleVolumeCreate creates a volume in a pool from the agent that serves
// the request (the pool is mounted on every host): qemu-img for a dir pool,
// lvcreate for an LVM pool. An existing volume is never overwritten.
func (o *Ops) handleVolumeCreate(w http.ResponseWriter, r *http.Request) {
	p, err := o.pool(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, notFoundAs(err, "name", "no storage pool named %q", r.PathValue("name")))
		return
	}
	var req VolumeRequest
	if err := decodeBody(w, r, &req, false); err != nil {
		WriteError(w, err)
		return
	}
	switch {
	case !guestdef.ValidName(req.Name):
		WriteError(w, Errorf(http.StatusBadRequest, "name", "%q is not a valid volume name: use letters, digits, '.', '_' or '-'", req.Name))
		return
	case req.Size <= 0:
		WriteError(w, Errorf(http.StatusBadRequest, "size", "give the volume's size, such as \"10GiB\""))
		return
	}
	if req.Format == "" {
		req.Format = "qcow2"
	}
	if req.Format != "qcow2" && req.Format != "raw" {
		WriteError(w, Errorf(http.StatusBadRequest, "format", "%q is not qcow2 or raw", req.Format))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	path, err := p.CreateVolume(ctx, req.Name, int64(req.Size), req.Format)
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, context.DeadlineExceeded) {
			code = http.StatusGatewayTimeout
		}
		WriteError(w, Errorf(code, "name", "%v", err))
		return
	}
	o.audit(r, "", "", "created volume %s in pool %s (%s, %s)", req.Name, p.Name, FormatSize(int64(req.Size)), req.Format)
	WriteJSON(w, http.StatusCreated, Volume{Pool: p.Name, Name: req.Name, Path: path, Size: int64(req.Size), Format: req.Format})
}

// handlePoolHealth lists every host's latest check of a pool.
func (o *Ops) handlePoolHealth(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, err := o.pool(r.Context(), name); err != nil {
		writeErr(w, notFoundAs(err, "name", "no storage pool named %q", name))
		return
	}
	all, err := o.cl.PoolHealths(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	rows := make([]PoolHealthRow, 0, len(all[name]))
	for _, h := range all[name] {
		h.Token = "" // the marker secret proves sharing; nobody else needs it
		rows = append(rows, h)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Node < rows[j].Node })
	WriteJSON(w, http.StatusOK, rows)
}
