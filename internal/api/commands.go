package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/storage"
	"github.com/haven-ha/haven/internal/store"
)

// CommandRequest is the body of POST /api/v1/guests/{name}/migrate and
// /relocate (node: the target host). Start, stop and disable take no body
// (or an empty object).
type CommandRequest struct {
	Node string `json:"node,omitempty"`
}

// MaintenanceRequest is the body of POST /api/v1/nodes/{name}/maintenance.
type MaintenanceRequest struct {
	On *bool `json:"on"`
}

// CommandResult is an operator command and its outcome. A command endpoint
// answers 200 with Done set when the manager carried it out, 202 with Done
// unset when the manager has not answered within the wait (poll GET
// /api/v1/commands/{id}), and 409 when it was refused.
type CommandResult struct {
	ID      string              `json:"id"`
	Command string              `json:"command"` // such as "migrate web1 n2"
	Kind    manager.CommandKind `json:"kind"`
	Guest   string              `json:"guest,omitempty"`
	Node    string              `json:"node,omitempty"`
	Who     string              `json:"who,omitempty"`
	At      time.Time           `json:"at"`
	Done    bool                `json:"done"`
	// Error is the manager's reason for refusing the command (only in GET
	// /api/v1/commands/{id}; the command endpoints answer 409 instead).
	Error string `json:"error,omitempty"`
}

func resultOf(c cluster.Command) CommandResult {
	return CommandResult{ID: c.ID, Command: c.Command.String(), Kind: c.Command.Kind, Guest: c.Command.Guest, Node: c.Command.Node, Who: c.Who, At: c.At, Done: c.Done, Error: c.Error}
}

// guestCommand handles POST /api/v1/guests/{name}/{kind}.
func (o *Ops) guestCommand(kind manager.CommandKind) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		var req CommandRequest
		if err := decodeBody(w, r, &req, true); err != nil {
			WriteError(w, err)
			return
		}
		c := manager.Command{Kind: kind, Guest: r.PathValue("name"), Node: req.Node}
		switch kind {
		case manager.CmdMigrate, manager.CmdRelocate:
			if req.Node == "" {
				WriteError(w, Errorf(http.StatusBadRequest, "node", "%s needs the target node", kind))
				return
			}
		default:
			if req.Node != "" {
				WriteError(w, Errorf(http.StatusBadRequest, "node", "%s takes no node: the manager places the guest (use migrate or relocate to choose)", kind))
				return
			}
		}
		o.runCommand(w, r, c)
	}
}

// handleMaintenance handles POST /api/v1/nodes/{name}/maintenance.
func (o *Ops) handleMaintenance(w http.ResponseWriter, r *http.Request) {
	var req MaintenanceRequest
	if err := decodeBody(w, r, &req, false); err != nil {
		WriteError(w, err)
		return
	}
	if req.On == nil {
		WriteError(w, Errorf(http.StatusBadRequest, "on", "say \"on\": true to enter maintenance or false to leave it"))
		return
	}
	c := manager.Command{Kind: manager.CmdMaintenanceOff, Node: r.PathValue("name")}
	if *req.On {
		c.Kind = manager.CmdMaintenanceOn
	}
	o.runCommand(w, r, c)
}

// checkCommand rejects a command at once when the store or the manager's
// current state says it cannot be carried out. A guest or node the manager
// has not taken in yet (it exists in the store) passes: the manager checks
// again when it applies the command.
func (o *Ops) checkCommand(ctx context.Context, c manager.Command) error {
	if p, err := o.cl.Policy(ctx); err != nil {
		return err
	} else if p.Hold {
		return Errorf(http.StatusConflict, "", "the cluster is on hold: the manager takes no action until `haven policy set --hold off`")
	}
	if c.Guest != "" {
		g, err := o.cl.Guest(ctx, c.Guest)
		if errors.Is(err, cluster.ErrNotFound) {
			return Errorf(http.StatusNotFound, "name", "no guest named %q: see `haven guest list`", c.Guest)
		} else if err != nil {
			return err
		}
		if c.Kind == manager.CmdMigrate || c.Kind == manager.CmdRelocate {
			// A guest whose disks another host cannot see cannot move.
			pools, err := o.cl.Pools(ctx)
			if err != nil {
				return err
			}
			if ok, why := storage.FailoverCapable(g.Def, pools); !ok {
				return Errorf(http.StatusConflict, "name", "%s %s: it cannot run on another host: %s", c.Kind, c.Guest, why)
			}
		}
	}
	if c.Node != "" {
		field := "node"
		if c.Guest == "" {
			field = "name"
		}
		if _, err := o.srv.Store().Node(ctx, c.Node); errors.Is(err, store.ErrNotFound) {
			code := http.StatusBadRequest
			if c.Guest == "" {
				code = http.StatusNotFound
			}
			return Errorf(code, field, "no host named %q in this cluster: see `haven node list`", c.Node)
		} else if err != nil {
			return err
		}
	}
	st, err := o.managerState(ctx)
	if err != nil || st == nil {
		return err
	}
	err = st.Validate(c)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, manager.ErrUnknownGuest), errors.Is(err, manager.ErrUnknownNode):
		return nil // in the store, not yet in the manager's state
	case errors.Is(err, manager.ErrUnknownCommand):
		return Errorf(http.StatusBadRequest, "", "%v", err)
	}
	field := "name"
	switch {
	case c.Guest == "":
	case errors.Is(err, manager.ErrNodeOffline), errors.Is(err, manager.ErrNodeMaintenance),
		errors.Is(err, manager.ErrNodeShuttingDown), errors.Is(err, manager.ErrOutsideDomain),
		errors.Is(err, manager.ErrNoRoom), errors.Is(err, manager.ErrSameNode):
		field = "node"
	}
	return Errorf(http.StatusConflict, field, "%v", err)
}

// runCommand checks c, queues it for the manager, waits for the outcome
// (bounded by CommandWait) and answers.
func (o *Ops) runCommand(w http.ResponseWriter, r *http.Request, c manager.Command) {
	ctx := r.Context()
	if err := o.checkCommand(ctx, c); err != nil {
		writeErr(w, err)
		return
	}
	at := o.now()
	rec, err := o.cl.QueueCommand(ctx, model.Command(c), who(r), at)
	if err != nil {
		writeErr(w, err)
		return
	}
	o.auditAt(r, at, c.Guest, c.Node, "requested %s (command %s)", c, rec.ID)
	wctx, cancel := context.WithTimeout(ctx, o.cfg.CommandWait)
	done, err := o.cl.WaitCommand(wctx, rec.ID)
	cancel()
	switch {
	case err != nil && ctx.Err() == nil && wctx.Err() != nil:
		res := resultOf(rec)
		w.Header().Set("Location", "/api/v1/commands/"+rec.ID)
		WriteJSON(w, http.StatusAccepted, res)
		return
	case err != nil:
		writeErr(w, fmt.Errorf("wait for command %s (%s): %w", rec.ID, c, err))
		return
	case done.Error != "":
		WriteError(w, Errorf(http.StatusConflict, "", "%s", done.Error))
		return
	}
	o.recordDesired(ctx, c)
	WriteJSON(w, http.StatusOK, resultOf(done))
}

// recordDesired writes the desired state a carried-out start, stop or
// disable set into the guest's record, so the record and the manager agree.
func (o *Ops) recordDesired(ctx context.Context, c manager.Command) {
	var want model.DesiredState
	switch c.Kind {
	case manager.CmdStart:
		want = model.DesiredStarted
	case manager.CmdStop:
		want = model.DesiredStopped
	case manager.CmdDisable:
		want = model.DesiredDisabled
	default:
		return
	}
	for range 3 {
		g, err := o.cl.Guest(ctx, c.Guest)
		if err != nil || g.Spec.State == want {
			return
		}
		g.Spec.State = want
		err = o.cl.UpdateGuest(ctx, g, o.now())
		if err == nil || !errors.Is(err, cluster.ErrConflict) {
			if err != nil {
				o.log.Warn("record desired state", "op", "command", "guest", c.Guest, "err", err)
			}
			return
		}
	}
}

func (o *Ops) handleCommandGet(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	resp, err := o.cl.Raw().Client().Get(r.Context(), cluster.KeyCommand(id))
	if err != nil {
		writeErr(w, fmt.Errorf("read command %s: %w", id, err))
		return
	}
	if len(resp.Kvs) == 0 {
		WriteError(w, Errorf(http.StatusNotFound, "id", "no command %q (finished commands are kept for 10 minutes)", id))
		return
	}
	var c cluster.Command
	if err := store.Decode(string(resp.Kvs[0].Key), resp.Kvs[0].Value, &c); err != nil {
		writeErr(w, fmt.Errorf("decode command %s: %w", id, err))
		return
	}
	WriteJSON(w, http.StatusOK, resultOf(c))
}
