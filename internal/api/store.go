package api

import (
	"bufio"
	"net/http"
)

func (o *Ops) registerStore() {
	o.handleLong("GET", "/api/v1/store/snapshot", RoleAdmin, o.handleStoreSnapshot)
}

// handleStoreSnapshot streams a consistent snapshot of the store (etcd's
// database and its SHA-256), for haven store backup.
func (o *Ops) handleStoreSnapshot(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="haven-store.snap"`)
	bw := bufio.NewWriterSize(w, 256<<10)
	n, err := o.cl.Raw().Snapshot(r.Context(), bw)
	if err != nil {
		if n == 0 {
			writeErr(w, err)
			return
		}
		// Too late for an error status: cut the stream short, which the
		// client's SHA-256 check catches.
		o.log.Warn("store snapshot interrupted", "err", err, "bytes", n)
		panic(http.ErrAbortHandler)
	}
	if err := bw.Flush(); err != nil {
		o.log.Warn("store snapshot not delivered", "err", err)
		return
	}
	o.audit(r, "", "", "store snapshot taken (%d bytes)", n)
}
