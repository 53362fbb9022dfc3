package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/haven-ha/haven/internal/manager"
)

func (o *Ops) registerWhatIf() {
	o.handle("GET", "/api/v1/whatif", RoleViewer, o.handleWhatIf)
}

// handleWhatIf answers GET /api/v1/whatif?down=N1,N2 (those hosts fail
// now) or ?maintenance=N1,N2 (they are put in maintenance): the manager core
// run on a copy of the manager's saved state (manager.RunWhatIf).
func (o *Ops) handleWhatIf(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	down, maint := q.Get("down"), q.Get("maintenance")
	if (down == "") == (maint == "") {
		WriteError(w, Errorf(http.StatusBadRequest, "down", "give down=HOST[,HOST] (hosts fail) or maintenance=HOST[,HOST], not both"))
		return
	}
	list, field := down, "down"
	if maint != "" {
		list, field = maint, "maintenance"
	}
	var nodes []string
	for _, n := range strings.Split(list, ",") {
		if n = strings.TrimSpace(n); n != "" {
			nodes = append(nodes, n)
		}
	}
	st, err := o.managerState(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	if st == nil {
		WriteError(w, Errorf(http.StatusServiceUnavailable, "", "no manager has saved its state yet: retry once the cluster has a manager"))
		return
	}
	res, err := manager.RunWhatIf(st, o.now(), nodes, maint != "", manager.DefaultWhatIfDurations())
	switch {
	case errors.Is(err, manager.ErrUnknownNode):
		WriteError(w, Errorf(http.StatusNotFound, field, "%v", err))
		return
	case err != nil:
		WriteError(w, Errorf(http.StatusBadRequest, field, "%v", err))
		return
	}
	WriteJSON(w, http.StatusOK, res)
}
