package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/fence"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store"
)

// FenceOutcome is the answer of POST /api/v1/nodes/{name}/fence: what the
// devices did. OK is false (and Error says why) when no level fenced the
// node: then it must be treated as still running.
type FenceOutcome struct {
	Result fence.Result `json:"result"`
	OK     bool         `json:"ok"`
	Error  string       `json:"error,omitempty"`
	// Told is the id of the confirm-off command queued for the manager when
	// the node was a failed node waiting for its fence: the manager counts
	// it fenced and recovers its guests without running the devices again.
	Told string `json:"told_manager,omitempty"`
}

// FenceTestOutcome is the answer of POST /api/v1/fence/test/{node}.
type FenceTestOutcome struct {
	Result fence.TestResult `json:"result"`
	OK     bool             `json:"ok"`
	Error  string           `json:"error,omitempty"`
}

func (o *Ops) registerNodeActions() {
	o.handle("POST", "/api/v1/nodes/{name}/maintenance", RoleOperator, o.handleMaintenance)
	o.handle("POST", "/api/v1/nodes/{name}/fence", RoleAdmin, o.handleNodeFence)
	o.handle("POST", "/api/v1/nodes/{name}/confirm-off", RoleAdmin, o.handleConfirmOff)
}

// handleConfirmOff handles POST /api/v1/nodes/{name}/confirm-off: the
// operator's word that a failed node is off (admin). The manager then
// recovers its guests without waiting for its fence devices; it refuses
// unless the node is a failed node waiting for its fence.
func (o *Ops) handleConfirmOff(w http.ResponseWriter, r *http.Request) {
	if err := decodeBody(w, r, &struct{}{}, true); err != nil {
		WriteError(w, err)
		return
	}
	o.runCommand(w, r, manager.Command{Kind: manager.CmdConfirmOff, Node: r.PathValue("name")})
}

func (o *Ops) registerFence() {
	o.handle("GET", "/api/v1/fence/config", RoleAdmin, o.handleFenceGet)
	o.handle("PUT", "/api/v1/fence/config", RoleAdmin, o.handleFencePut)
	o.handle("POST", "/api/v1/fence/test/{node}", RoleAdmin, o.handleFenceTest)
}

// handleFenceGet returns the fence configuration with every secret
// replaced by fence.Redacted.
func (o *Ops) handleFenceGet(w http.ResponseWriter, r *http.Request) {
	c, err := o.fenceConfig(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, c.Redacted())
}

// handleFencePut replaces the fence configuration. A secret sent back as
// fence.Redacted keeps the stored value of the same device. With
// ?validate=true every device is also checked against its agent's metadata
// (on this host) before anything is stored.
func (o *Ops) handleFencePut(w http.ResponseWriter, r *http.Request) {
	var c fence.Config
	if err := decodeBody(w, r, &c, false); err != nil {
		WriteError(w, err)
		return
	}
	old, err := o.fenceConfig(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	byName := map[string]fence.Device{}
	for _, d := range old.Devices {
		byName[d.Name] = d
	}
	for i, d := range c.Devices {
		old, had := byName[d.Name]
		d = d.KeepSecrets(old)
		for k, v := range d.Params {
			if v == fence.Redacted && d.IsSecret(k) {
				if _, stored := old.Params[k]; had && stored {
					WriteError(w, Errorf(http.StatusBadRequest, fmt.Sprintf("devices[%d].params.%s", i, k), "fence device %q was re-pointed (its agent or address changed): send secret %q again", d.Name, k))
					return
				}
				WriteError(w, Errorf(http.StatusBadRequest, fmt.Sprintf("devices[%d].params.%s", i, k), "fence device %q: no stored value for secret %q: send the real value", d.Name, k))
				return
			}
		}
		for n, p := range d.NodeParams {
			for k, v := range p {
				if v == fence.Redacted && d.IsSecret(k) {
					WriteError(w, Errorf(http.StatusBadRequest, fmt.Sprintf("devices[%d].node_params.%s.%s", i, n, k), "fence device %q: no stored value for secret %q of node %q: send the real value", d.Name, k, n))
					return
				}
			}
		}
		c.Devices[i] = d
	}
	if c.Levels == nil {
		c.Levels = map[string][]fence.Level{}
	}
	if err := c.Check(); err != nil {
		WriteError(w, Errorf(http.StatusBadRequest, fenceField(err), "fencing configuration: %v", err))
		return
	}
	if v := r.URL.Query().Get("validate"); v == "1" || v == "true" {
		f, err := fence.New(c, fence.Options{Runner: o.cfg.FenceRunner, Logger: o.log})
		if err == nil {
			_, err = f.Validate(r.Context())
		}
		if err != nil {
			WriteError(w, Errorf(http.StatusBadRequest, "devices", "fencing configuration does not match the agents' metadata: %v", err))
			return
		}
	}
	if err := o.cl.WriteSealed(r.Context(), cluster.KeyFenceConfig, c); err != nil {
		writeErr(w, err)
		return
	}
	o.audit(r, "", "", "set fencing configuration: %d devices, levels for %d nodes", len(c.Devices), len(c.Levels))
	WriteJSON(w, http.StatusOK, c.Redacted())
}

// fenceField names the part of the configuration a Check error is about.
func fenceField(err error) string {
	first, _, _ := strings.Cut(err.Error(), "\n")
	switch {
	case strings.HasPrefix(first, "fence device"):
		return "devices"
	case strings.HasPrefix(first, "fencing action"):
		return "action"
	case strings.HasPrefix(first, "node "):
		return "levels"
	}
	return ""
}

func (o *Ops) fencer(r *http.Request) (*fence.Fencer, error) {
	c, err := o.fenceConfig(r.Context())
	if err != nil {
		return nil, err
	}
	f, err := fence.New(c, fence.Options{Runner: o.cfg.FenceRunner, Logger: o.log})
	if err != nil {
		return nil, Errorf(http.StatusConflict, "", "%v: fix it with `haven fence set`", err)
	}
	return f, nil
}

// checkFenceNode answers 404 for a node neither registered nor in the
// fence levels, 409 for one without levels.
func (o *Ops) checkFenceNode(r *http.Request, node, field string) error {
	c, err := o.fenceConfig(r.Context())
	if err != nil {
		return err
	}
	_, hasLevels := c.Levels[node]
	_, err = o.srv.Store().Node(r.Context(), node)
	switch {
	case errors.Is(err, store.ErrNotFound) && !hasLevels:
		return Errorf(http.StatusNotFound, field, "no host named %q in this cluster or its fencing configuration", node)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return err
	case !hasLevels:
		return Errorf(http.StatusConflict, field, "node %q has no fencing levels: add them with `haven fence set`", node)
	}
	return nil
}

// handleNodeFence fences a node now through its devices (admin). It
// refuses to fence the node whose agent serves the request.
func (o *Ops) handleNodeFence(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("name")
	if err := o.checkFenceNode(r, node, "name"); err != nil {
		writeErr(w, err)
		return
	}
	if node == o.srv.cfg.Node {
		WriteError(w, Errorf(http.StatusConflict, "name", "this API is served by node %q itself: send the request to another host's agent", node))
		return
	}
	f, err := o.fencer(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	o.audit(r, "", node, "fencing node %s by operator request", node)
	// A fence half done is worse than none: it runs to its end even if the
	// client goes away (each agent run is bounded by its device's timeout).
	res, ferr := f.Fence(context.WithoutCancel(r.Context()), node)
	out := FenceOutcome{Result: res, OK: ferr == nil}
	if ferr != nil {
		out.Error = ferr.Error()
		o.audit(r, "", node, "operator fence of node %s failed: %v", node, ferr)
	} else {
		o.audit(r, "", node, "node %s fenced by operator request (level %d, devices %s)", node, res.Level, strings.Join(res.Devices, ","))
		out.Told = o.tellFenced(r, node)
	}
	WriteJSON(w, http.StatusOK, out)
}

// tellFenced queues a confirm-off command when the manager waits for node's
// fence: the operator's fence that just succeeded is the proof it waits for.
// It returns the command's id, or "" when the manager was not waiting (an
// online node fenced by hand is seen failed when its lease expires, and
// fenced again: harmless, it is off).
func (o *Ops) tellFenced(r *http.Request, node string) string {
	ctx := context.WithoutCancel(r.Context())
	c := manager.Command{Kind: manager.CmdConfirmOff, Node: node}
	st, err := o.managerState(ctx)
	if err != nil || st == nil || st.Validate(c) != nil {
		return ""
	}
	rec, err := o.cl.QueueCommand(ctx, model.Command(c), who(r), o.now())
	if err != nil {
		o.log.Warn("tell the manager of an operator fence", "node", node, "op", "fence", "err", err)
		return ""
	}
	o.audit(r, "", node, "told the manager that node %s is fenced (command %s)", node, rec.ID)
	return rec.ID
}

// handleFenceTest asks each device of the node's levels for its status.
func (o *Ops) handleFenceTest(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("node")
	if err := o.checkFenceNode(r, node, "node"); err != nil {
		writeErr(w, err)
		return
	}
	f, err := o.fencer(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	res, terr := f.Test(r.Context(), node)
	out := FenceTestOutcome{Result: res, OK: terr == nil}
	if terr != nil {
		out.Error = terr.Error()
	}
	WriteJSON(w, http.StatusOK, out)
}

// fenceConfig reads the fence configuration (empty when never set), sealed
// in the store.
func (o *Ops) fenceConfig(ctx context.Context) (fence.Config, error) {
	return cluster.ReadSealed[fence.Config](ctx, o.cl, cluster.KeyFenceConfig)
}
