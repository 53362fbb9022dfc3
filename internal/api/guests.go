package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/savedstate"
	"github.com/haven-ha/haven/internal/storage"
	"github.com/haven-ha/haven/internal/store"
)

// GuestForm is the body of POST /api/v1/guests and PUT
// /api/v1/guests/{name}. On create, absent fields take the defaults (or,
// with Format and Config, the imported definition's values); on edit,
// absent fields keep their current values.
type GuestForm struct {
	Name           string             `json:"name"`
	Memory         Size               `json:"memory"`
	VCPUs          int                `json:"vcpus"`
	State          model.DesiredState `json:"state"`
	Domain         string             `json:"domain"`
	Recovery       model.Recovery     `json:"recovery"`
	MaxRestarts    int                `json:"max_restarts"`
	RestartWindow  Duration           `json:"restart_window"`
	MaxRelocations int                `json:"max_relocations"`
	Migratable     bool               `json:"migratable"`
	// Priority (0..1000) orders placement and lets the guest preempt lower
	// ones when the cluster policy has preemption on.
	Priority int `json:"priority"`
	// After are the guests that must run before this one starts (start
	// order); it stops before them.
	After []string `json:"after,omitempty"`
	// Tags label the guest for selection (at most 16, each 1..32 of
	// a-z 0-9 . _ -).
	Tags []string `json:"tags,omitempty"`
	// CPUModel overrides the cluster's CPU model: a model such as
	// x86-64-v3, or host; empty: the cluster's (docs/manager.md).
	CPUModel string `json:"cpu_model,omitempty"`
	// Node is the host to place the guest on first (create only; use
	// migrate or relocate afterwards).
	Node      string          `json:"node,omitempty"`
	Disks     []guestdef.Disk `json:"disks"`
	NICs      []guestdef.NIC  `json:"nics"`
	Boot      guestdef.Boot   `json:"boot"`
	SerialLog string          `json:"serial_log,omitempty"`
	// GuestAgent, Health, Address and NoPanicDevice: see guestdef.Definition.
	GuestAgent    bool             `json:"guest_agent,omitempty"`
	Health        []guestdef.Check `json:"health,omitempty"`
	Address       string           `json:"address,omitempty"`
	NoPanicDevice bool             `json:"no_panic_device,omitempty"`
	Display       string           `json:"display,omitempty"`
	// Format ("libvirt" or "xen") and Config (the domain XML or the Xen
	// config file's text) import the definition.
	Format string `json:"format,omitempty"`
	Config string `json:"config,omitempty"`
	// Rev, on edit, is the rev of the guest as read; the edit fails with
	// 409 if the guest changed since. 0 edits unconditionally.
	Rev int64 `json:"rev,omitempty"`
}

// GuestPatch is the body of POST /api/v1/guests and PUT
// /api/v1/guests/{name} that sets only the fields given (nil fields are
// left out): a create takes the defaults for the others, an edit keeps
// the guest's. Its JSON is a subset of GuestForm's.
type GuestPatch struct {
	Name           *string             `json:"name,omitempty"`
	Memory         *Size               `json:"memory,omitempty"`
	VCPUs          *int                `json:"vcpus,omitempty"`
	State          *model.DesiredState `json:"state,omitempty"`
	Domain         *string             `json:"domain,omitempty"`
	Recovery       *model.Recovery     `json:"recovery,omitempty"`
	MaxRestarts    *int                `json:"max_restarts,omitempty"`
	RestartWindow  *Duration           `json:"restart_window,omitempty"`
	MaxRelocations *int                `json:"max_relocations,omitempty"`
	Migratable     *bool               `json:"migratable,omitempty"`
	Priority       *int                `json:"priority,omitempty"`
	After          *[]string           `json:"after,omitempty"`
	Tags           *[]string           `json:"tags,omitempty"`
	CPUModel       *string             `json:"cpu_model,omitempty"`
	Node           *string             `json:"node,omitempty"`
	Disks          *[]guestdef.Disk    `json:"disks,omitempty"`
	NICs           *[]guestdef.NIC     `json:"nics,omitempty"`
	Boot           *guestdef.Boot      `json:"boot,omitempty"`
	SerialLog      *string             `json:"serial_log,omitempty"`
	Format         string              `json:"format,omitempty"`
	Config         string              `json:"config,omitempty"`
	Rev            int64               `json:"rev,omitempty"`
}

// Empty reports whether the patch sets no field.
func (p GuestPatch) Empty() bool { return p == GuestPatch{} }

// GuestRuntime is what the manager knows of a guest now.
type GuestRuntime struct {
	// State is the manager's state of the guest (started, stopped,
	// disabled, failed, recovering, fencing, frozen), or "pending" when
	// the manager has not taken the guest in yet.
	State        string      `json:"state"`
	Node         string      `json:"node,omitempty"`
	Running      bool        `json:"running"`
	Op           *manager.Op `json:"op,omitempty"`
	Restarts     int         `json:"restarts"`
	Moves        int         `json:"moves"`
	RunningSince time.Time   `json:"running_since,omitzero"`
	// Wait says why a guest that should run waits (a start dependency, no
	// host can take it, an affinity rule, its CPU model).
	Wait string `json:"wait,omitempty"`
	// CPUModel is the CPU model it runs with, or would be started with
	// now ("" or host: the host's CPU).
	CPUModel string `json:"cpu_model,omitempty"`
	// Health is the last result of each health check of the guest, as
	// its host last reported it while the guest runs there (per check:
	// pass or fail, failures in a row, output truncated, time). Hosts
	// report when a check changes status, not at every run.
	Health []health.Result `json:"health,omitempty"`
}

// StatePending is the runtime state of a guest the manager has not seen.
const StatePending = "pending"

// GuestRow is one guest in GET /api/v1/guests and in the status.
type GuestRow struct {
	Name    string             `json:"name"`
	State   string             `json:"state"`
	Node    string             `json:"node,omitempty"`
	Desired model.DesiredState `json:"desired"`
	Domain  string             `json:"domain,omitempty"`
	Memory  int64              `json:"memory"`
	VCPUs   int                `json:"vcpus"`
	Running bool               `json:"running"`
	// Op is the operation in flight: its kind (start, stop, migrate), node
	// and, for a migration, target.
	Op *manager.Op `json:"op,omitempty"`
	// Wait says why it waits (see GuestRuntime).
	Wait string `json:"wait,omitempty"`
	// Tags are the guest's tags.
	Tags []string `json:"tags,omitempty"`
}

// GuestInfo is the answer of GET /api/v1/guests/{name}.
type GuestInfo struct {
	Name       string              `json:"name"`
	Spec       model.GuestSpec     `json:"spec"`
	Definition guestdef.Definition `json:"definition"`
	Rev        int64               `json:"rev"`
	Created    time.Time           `json:"created"`
	Updated    time.Time           `json:"updated"`
	Runtime    GuestRuntime        `json:"runtime"`
	// Failover says whether the guest can run on any host (every disk on
	// a shared storage pool), and if not, why.
	Failover FailoverInfo `json:"failover"`
	// History is the guest's recent entries of the event log, oldest first.
	History []cluster.Event `json:"history"`
}

// FailoverInfo is storage.FailoverCapable's verdict on a guest.
type FailoverInfo struct {
	Capable bool   `json:"capable"`
	Reason  string `json:"reason,omitempty"`
}

// historyScan bounds how many recent events a guest's history looks at.
const historyScan = 2000

// historyKeep is how many of them GET guest returns.
const historyKeep = 50

func (o *Ops) registerGuests() {
	o.handle("GET", "/api/v1/guests", RoleViewer, o.handleGuestList)
	o.handle("POST", "/api/v1/guests", RoleOperator, o.handleGuestCreate)
	o.handle("GET", "/api/v1/guests/{name}", RoleViewer, o.handleGuestGet)
	o.handle("PUT", "/api/v1/guests/{name}", RoleOperator, o.handleGuestEdit)
	o.handle("DELETE", "/api/v1/guests/{name}", RoleOperator, o.handleGuestDelete)
	for _, k := range []manager.CommandKind{manager.CmdStart, manager.CmdStop, manager.CmdDisable, manager.CmdMigrate, manager.CmdRelocate} {
		o.handle("POST", "/api/v1/guests/{name}/"+string(k), RoleOperator, o.guestCommand(k))
	}
	o.handle("GET", "/api/v1/commands/{id}", RoleViewer, o.handleCommandGet)
}

// managerState reads the manager's saved state; nil before the first
// manager saved one.
func (o *Ops) managerState(ctx context.Context) (*manager.State, error) {
	st, err := savedstate.Load(ctx, o.cl.Raw().Client())
	if errors.Is(err, cluster.ErrNotFound) {
		return nil, nil
	}
	return st, err
}

func runtimeOf(st *manager.State, name string) GuestRuntime {
	if st == nil {
		return GuestRuntime{State: StatePending}
	}
	g := st.Guest(name)
	if g == nil {
		return GuestRuntime{State: StatePending}
	}
	return GuestRuntime{State: string(g.State), Node: g.Node, Running: g.Running, Op: g.Op, Restarts: g.Restarts, Moves: g.Moves, RunningSince: g.RunningSince, Wait: g.Wait, CPUModel: st.CPUModel(g)}
}

// GuestRows lists the guests with their runtime state, by name.
func (o *Ops) GuestRows(ctx context.Context) ([]GuestRow, error) {
	return o.guestRows(ctx)
}

// guestRows reads the guest records and the manager state with extra read
// options (clientv3.WithSerializable for what the nearest store member
// knows when there is no quorum).
func (o *Ops) guestRows(ctx context.Context, opts ...clientv3.OpOption) ([]GuestRow, error) {
	rows, _, err := o.guestRowsState(ctx, opts...)
	return rows, err
}

// guestRowsState is guestRows that also returns the manager state read (nil
// before the first manager saved one).
func (o *Ops) guestRowsState(ctx context.Context, opts ...clientv3.OpOption) ([]GuestRow, *manager.State, error) {
	cli := o.cl.Raw().Client()
	resp, err := cli.Get(ctx, cluster.PrefixGuests, append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("list guests: %w", err)
	}
	st, _, err := savedstate.Read(ctx, cli, opts...)
	if err != nil {
		return nil, nil, err
	}
	rows := make([]GuestRow, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var g cluster.Guest
		if err := store.Decode(string(kv.Key), kv.Value, &g); err != nil {
			return nil, nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		rt := runtimeOf(st, g.Spec.Name)
		node := rt.Node
		if node == "" {
			node = g.Spec.Node
		}
		rows = append(rows, GuestRow{Name: g.Spec.Name, State: rt.State, Node: node, Desired: g.Spec.State, Domain: g.Spec.Domain, Memory: g.Spec.Memory, VCPUs: g.Spec.CPUs, Running: rt.Running, Op: rt.Op, Wait: rt.Wait, Tags: g.Spec.Tags})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows, st, nil
}

func (o *Ops) handleGuestList(w http.ResponseWriter, r *http.Request) {
	tag := r.URL.Query().Get("tag")
	if tag != "" && !cluster.ValidTag(tag) {
		writeErr(w, Errorf(http.StatusBadRequest, "tag", "%q is not a valid tag: use lower-case letters, digits, '.', '_' or '-', at most %d", tag, model.MaxTagLen))
		return
	}
	rows, err := o.GuestRows(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	if tag != "" {
		rows = FilterTag(rows, tag)
	}
	WriteJSON(w, http.StatusOK, rows)
}

// FilterTag keeps the rows that carry tag.
func FilterTag(rows []GuestRow, tag string) []GuestRow {
	out := []GuestRow{}
	for _, g := range rows {
		for _, t := range g.Tags {
			if t == tag {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// statusHook adds the guests to /api/v1/status. Without store quorum it
// shows what the nearest store member last knew, as status does.
func (o *Ops) statusHook(ctx context.Context, st *Status) error {
	var rows []GuestRow
	var mst *manager.State
	err := context.DeadlineExceeded
	if !store.IsSerializable(ctx) {
		// Status already knows the store has no quorum when ctx is
		// marked: go straight to the local read.
		qctx, cancel := context.WithTimeout(ctx, statusQuorumWait)
		rows, mst, err = o.guestRowsState(qctx)
		cancel()
	}
	if err != nil && ctx.Err() == nil {
		rows, mst, err = o.guestRowsState(ctx, clientv3.WithSerializable())
	}
	if err != nil {
		return err
	}
	if mst != nil {
		for i := range st.Hosts {
			if n := mst.Node(st.Hosts[i].Name); n != nil {
				st.Hosts[i].Maintenance, st.Hosts[i].HA = n.Maintenance, string(n.Status)
			}
		}
	}
	sum := &GuestSummary{Total: len(rows), ByState: map[string]int{}}
	for _, g := range rows {
		sum.ByState[g.State]++
	}
	sum.Guests, err = json.Marshal(rows)
	if err != nil {
		return err
	}
	st.Guests = sum
	return nil
}

// statusQuorumWait bounds the status hook's quorum read.
const statusQuorumWait = time.Second

func (o *Ops) guestInfo(ctx context.Context, name string) (*GuestInfo, error) {
	g, err := o.cl.Guest(ctx, name)
	if errors.Is(err, cluster.ErrNotFound) {
		return nil, Errorf(http.StatusNotFound, "name", "no guest named %q: see `haven guest list`", name)
	} else if err != nil {
		return nil, err
	}
	st, err := o.managerState(ctx)
	if err != nil {
		return nil, err
	}
	evs, _, err := o.cl.Events(ctx, historyScan)
	if err != nil {
		return nil, err
	}
	hist := []cluster.Event{}
	for _, e := range evs {
		if e.Guest == name {
			hist = append(hist, e)
		}
	}
	if len(hist) > historyKeep {
		hist = hist[len(hist)-historyKeep:]
	}
	pools, err := o.pools(ctx)
	if err != nil {
		return nil, err
	}
	var fo FailoverInfo
	fo.Capable, fo.Reason = storage.FailoverCapable(g.Def, pools)
	rt := runtimeOf(st, name)
	if rt.Node != "" && rt.Running {
		rep, _, err := cluster.Get[hostctl.Report](ctx, o.cl, cluster.KeyReport(rt.Node, name))
		if err != nil && !errors.Is(err, cluster.ErrNotFound) {
			return nil, err
		}
		rt.Health = rep.Health
	}
	return &GuestInfo{Name: name, Spec: g.Spec, Definition: g.Def, Rev: g.Rev, Created: g.Created, Updated: g.Updated, Runtime: rt, Failover: fo, History: hist}, nil
}

func (o *Ops) handleGuestGet(w http.ResponseWriter, r *http.Request) {
	gi, err := o.guestInfo(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, gi)
}

// formOf is the form that describes a stored guest.
func formOf(g cluster.Guest) GuestForm {
	s, d := g.Spec, g.Def
	return GuestForm{
		Name: s.Name, Memory: Size(s.Memory), VCPUs: s.CPUs, State: s.State, Domain: s.Domain,
		Recovery: s.Recovery, MaxRestarts: s.MaxRestarts, RestartWindow: Duration(s.RestartWindow),
		MaxRelocations: s.MaxRelocations, Migratable: s.Migratable, Priority: s.Priority, After: s.After, Tags: s.Tags, CPUModel: s.CPUModel, Node: s.Node,
		Disks: d.Disks, NICs: d.NICs, Boot: d.Boot, SerialLog: d.SerialLog,
		GuestAgent: d.GuestAgent, Health: d.Health, Address: d.Address, NoPanicDevice: d.NoPanicDevice, Display: d.Display,
	}
}

// guest turns the form into a record, keeping what base has that the form
// does not describe (the raw XML of an import, timestamps).
func (f *GuestForm) guest(base cluster.Guest) cluster.Guest {
	g := base
	g.Spec = model.GuestSpec{
		Name: f.Name, Memory: int64(f.Memory), CPUs: f.VCPUs, State: f.State, Domain: f.Domain,
		Recovery: f.Recovery, MaxRestarts: f.MaxRestarts, RestartWindow: time.Duration(f.RestartWindow),
		MaxRelocations: f.MaxRelocations, Migratable: f.Migratable, Priority: f.Priority, After: f.After, Tags: f.Tags, CPUModel: f.CPUModel, Node: f.Node,
	}
	g.Def.Name, g.Def.VCPUs, g.Def.Memory = f.Name, f.VCPUs, int64(f.Memory)
	g.Def.Disks, g.Def.NICs, g.Def.Boot, g.Def.SerialLog = f.Disks, f.NICs, f.Boot, f.SerialLog
	g.Def.GuestAgent, g.Def.Health, g.Def.Address, g.Def.NoPanicDevice = f.GuestAgent, f.Health, f.Address, f.NoPanicDevice
	g.Def.Display = f.Display
	g.Rev = f.Rev
	return g
}

// format peeks at the import fields of a guest body.
type importFields struct {
	Format string `json:"format"`
	Config string `json:"config"`
}

// buildGuest decodes a guest body over base (the current guest, or the
// defaults for a new one), importing the definition first when the body
// has a format. It checks everything that can be checked without the
// store.
func (o *Ops) buildGuest(data []byte, base cluster.Guest) (cluster.Guest, GuestForm, error) {
	var imp importFields
	if len(data) > 0 {
		// Errors are reported by the strict decode below.
		_ = json.Unmarshal(data, &imp)
	}
	if imp.Format != "" {
		fn := o.cfg.Importers[imp.Format]
		if fn == nil {
			return cluster.Guest{}, GuestForm{}, Errorf(http.StatusBadRequest, "format", "format %q cannot be imported here; known formats: %s", imp.Format, o.importerNames())
		}
		if imp.Config == "" {
			return cluster.Guest{}, GuestForm{}, Errorf(http.StatusBadRequest, "config", "format %q needs the configuration's text in config", imp.Format)
		}
		def, err := fn([]byte(imp.Config))
		if err != nil {
			return cluster.Guest{}, GuestForm{}, Errorf(http.StatusBadRequest, "config", "import %s configuration: %v", imp.Format, err)
		}
		if base.Spec.Name == "" {
			base.Spec.Name = def.Name
		}
		base.Def = def
		if def.Memory > 0 {
			base.Spec.Memory = def.Memory
		}
		if def.VCPUs > 0 {
			base.Spec.CPUs = def.VCPUs
		}
	} else if imp.Config != "" {
		return cluster.Guest{}, GuestForm{}, Errorf(http.StatusBadRequest, "format", "config given without format: set format to libvirt or xen")
	}
	f := formOf(base)
	f.Rev = 0
	if err := decodeStrict(data, &f, false); err != nil {
		return cluster.Guest{}, f, err
	}
	g := f.guest(base)
	if err := cluster.CheckSpec(g.Spec); err != nil {
		// The form calls the spec's cpus vcpus.
		var fe *cluster.FieldError
		if errors.As(err, &fe) && fe.Field == "cpus" {
			return g, f, Errorf(http.StatusBadRequest, "vcpus", "vcpus: %s", fe.Msg)
		}
		return g, f, apiError(err)
	}
	if err := checkDef(g.Def); err != nil {
		return g, f, err
	}
	return g, f, nil
}

func (o *Ops) importerNames() string {
	var ns []string
	for n := range o.cfg.Importers {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	if len(ns) == 0 {
		return "none (no importer is built in)"
	}
	return fmt.Sprint(ns)
}

// checkDef checks a guest's definition on its own (guestdef's rules, the
// same the drivers rely on).
func checkDef(d guestdef.Definition) error {
	if err := d.Validate(); err != nil {
		return fieldError(err)
	}
	return nil
}

// checkRefs checks a guest's references to the store: its first node and
// its disks' pools.
func (o *Ops) checkRefs(ctx context.Context, g cluster.Guest, create bool) error {
	if create && g.Spec.Node != "" {
		if _, err := o.srv.Store().Node(ctx, g.Spec.Node); errors.Is(err, store.ErrNotFound) {
			return Errorf(http.StatusBadRequest, "node", "no host named %q in this cluster", g.Spec.Node)
		} else if err != nil {
			return err
		}
	}
	for i, d := range g.Def.Disks {
		if d.Pool == "" {
			continue
		}
		if _, err := o.pool(ctx, d.Pool); errors.Is(err, cluster.ErrNotFound) {
			return Errorf(http.StatusBadRequest, fmt.Sprintf("disks[%d].pool", i), "no storage pool named %q: create it first", d.Pool)
		} else if err != nil {
			return err
		}
	}
	// Every file the guest names must be in a pool an admin declared: an
	// operator must not make the hypervisor open any file of the host.
	pools, err := o.pools(ctx)
	if err != nil {
		return err
	}
	if err := storage.CheckPaths(g.Def, pools, storage.Lexical); err != nil {
		return fieldError(err)
	}
	return o.checkAfter(ctx, g)
}

// checkAfter checks a guest's start dependencies: known guests, no cycle.
func (o *Ops) checkAfter(ctx context.Context, g cluster.Guest) error {
	if len(g.Spec.After) == 0 {
		return nil
	}
	all, err := o.cl.Guests(ctx)
	if err != nil {
		return err
	}
	after := map[string][]string{}
	for _, x := range all {
		after[x.Spec.Name] = x.Spec.After
	}
	for _, d := range g.Spec.After {
		if _, ok := after[d]; !ok || d == g.Spec.Name {
			return Errorf(http.StatusBadRequest, "after", "%q: no other guest of that name", d)
		}
	}
	after[g.Spec.Name] = g.Spec.After
	if c := model.DependencyCycle(after); c != nil {
		return Errorf(http.StatusBadRequest, "after", "start order would have a cycle: %s", model.FormatCycle(c))
	}
	return nil
}

func (o *Ops) handleGuestCreate(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	data, err := readBody(w, r)
	if err != nil {
		WriteError(w, err)
		return
	}
	base := cluster.Guest{Spec: model.DefaultGuestSpec("")}
	g, _, err := o.buildGuest(data, base)
	if err != nil {
		writeErr(w, err)
		return
	}
	if err := o.checkRefs(ctx, g, true); err != nil {
		writeErr(w, err)
		return
	}
	if g.Spec.State == model.DesiredStarted || g.Spec.State == "" {
		// Admission control judges a guest created started like a start.
		st, err := o.managerState(ctx)
		if err != nil {
			writeErr(w, err)
			return
		}
		if st != nil {
			if err := st.Admit(g.Spec); err != nil {
				WriteError(w, Errorf(http.StatusConflict, "state", "create %v", err))
				return
			}
		}
	}
	if err := o.allowGuestWrite(w, g.Spec.Name, guestSize(g)); err != nil {
		WriteError(w, err)
		return
	}
	if err := o.cl.CreateGuest(ctx, g, o.now()); err != nil {
		writeErr(w, err)
		return
	}
	o.audit(r, g.Spec.Name, "", "created guest %s (%s, %d vCPUs, state %s)", g.Spec.Name, FormatSize(g.Spec.Memory), g.Spec.CPUs, g.Spec.State)
	gi, err := o.guestInfo(ctx, g.Spec.Name)
	if err != nil {
		writeErr(w, err)
		return
	}
	WriteJSON(w, http.StatusCreated, gi)
}

func (o *Ops) handleGuestEdit(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	data, err := readBody(w, r)
	if err != nil {
		WriteError(w, err)
		return
	}
	cur, err := o.cl.Guest(ctx, name)
	if errors.Is(err, cluster.ErrNotFound) {
		WriteError(w, Errorf(http.StatusNotFound, "name", "no guest named %q", name))
		return
	} else if err != nil {
		writeErr(w, err)
		return
	}
	g, _, err := o.buildGuest(data, cur)
	if err != nil {
		writeErr(w, err)
		return
	}
	switch {
	case g.Spec.Name != name:
		WriteError(w, Errorf(http.StatusBadRequest, "name", "a guest cannot be renamed (from %q to %q): create a new one", name, g.Spec.Name))
		return
	case g.Spec.Node != cur.Spec.Node:
		WriteError(w, Errorf(http.StatusBadRequest, "node", "the node is not edited: use `haven guest migrate` or `relocate`"))
		return
	case g.Spec.State != cur.Spec.State:
		WriteError(w, Errorf(http.StatusBadRequest, "state", "the state is not edited: use `haven guest start`, `stop` or `disable`"))
		return
	}
	if err := o.checkRefs(ctx, g, false); err != nil {
		writeErr(w, err)
		return
	}
	if err := o.allowGuestWrite(w, name, guestSize(g)); err != nil {
		WriteError(w, err)
		return
	}
	if err := o.cl.UpdateGuest(ctx, g, o.now()); err != nil {
		writeErr(w, err)
		return
	}
	o.audit(r, name, "", "edited guest %s", name)
	gi, err := o.guestInfo(ctx, name)
	if err != nil {
		writeErr(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, gi)
}

// handleGuestDelete removes a guest that is stopped or disabled and not
// running anywhere.
func (o *Ops) handleGuestDelete(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	g, err := o.cl.Guest(ctx, name)
	if errors.Is(err, cluster.ErrNotFound) {
		WriteError(w, Errorf(http.StatusNotFound, "name", "no guest named %q", name))
		return
	} else if err != nil {
		writeErr(w, err)
		return
	}
	st, err := o.managerState(ctx)
	if err != nil {
		writeErr(w, err)
		return
	}
	if g.Spec.State == model.DesiredStarted {
		WriteError(w, Errorf(http.StatusConflict, "name", "guest %q should be running: stop or disable it first (`haven guest disable %s`)", name, name))
		return
	}
	if mg := stGuest(st, name); mg != nil {
		if mg.Running || mg.Op != nil || (mg.State != manager.GuestStopped && mg.State != manager.GuestDisabled) {
			WriteError(w, Errorf(http.StatusConflict, "name", "guest %q is %s (running: %v) on %q: wait until it is stopped or disabled", name, mg.State, mg.Running, mg.Node))
			return
		}
	}
	// Delete only the record that was checked.
	resp, err := o.cl.Raw().Client().Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(cluster.KeyGuest(name)), "=", g.Rev)).
		Then(clientv3.OpDelete(cluster.KeyGuest(name))).Commit()
	if err != nil {
		writeErr(w, fmt.Errorf("delete guest %q: %w", name, err))
		return
	}
	if !resp.Succeeded {
		WriteError(w, Errorf(http.StatusConflict, "name", "guest %q changed while being deleted: check its state and retry", name))
		return
	}
	o.audit(r, name, "", "deleted guest %s", name)
	w.WriteHeader(http.StatusNoContent)
}

// guestSize is the size of g's stored record.
func guestSize(g cluster.Guest) int {
	b, _ := json.Marshal(g)
	return len(b)
}

func stGuest(st *manager.State, name string) *manager.Guest {
	if st == nil {
		return nil
	}
	return st.Guest(name)
}
