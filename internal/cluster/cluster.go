// Package cluster owns the records that describe and drive the cluster in the
// store, beyond membership (package store): guests (policy + hypervisor
// definition), failover domains, fence configuration, storage pools, cluster
// policy, operator commands, the manager's orders to agents and the agents'
// guest reports, the manager's saved state, graceful-shutdown handshakes and
// the event log. The API writes specs and commands through it, the manager's
// shell reads them, the agents read orders and write reports.
//
// Key layout (all under store.Prefix):
//
//	policy                     Policy
//	guests/<name>              Guest (spec + definition)
//	domains/<name>             model.Domain
//	fence/config               fence.Config (sealed; secrets included; never served as is)
//	pools/<name>               storage pool record
//	commands/<id>              Command (operator command; result filled in by the manager)
//	orders/<node>/<guest>      hostctl.Order (manager-guarded)
//	reports/<node>/<guest>     hostctl.Report (under the node's lease)
//	manager/...                the manager's saved state (package savedstate; manager-guarded)
//	shutdown/<node>            Shutdown (a node going down gracefully; under its lease)
//	shutdown-ready/<node>      written by the manager when the node is empty
//	events/<seq>               Event (the event and audit log)
//	incidents/<seq>            Incident (a manager step that failed on an internal error; gzip JSON)
package cluster

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/notify"
	"github.com/haven-ha/haven/internal/store"
)

// Keys and prefixes (the layout is store's: see store/keys.go).
const (
	KeyPolicy           = store.KeyPolicy
	PrefixGuests        = store.PrefixGuests
	PrefixDomains       = store.PrefixDomains
	KeyFenceConfig      = store.KeyFenceConfig
	KeyNotify           = store.KeyNotify
	PrefixPools         = store.PrefixPools
	PrefixCommands      = store.PrefixCommands
	PrefixOrders        = store.PrefixOrders
	PrefixReports       = store.PrefixReports
	PrefixShutdown      = store.PrefixShutdown
	PrefixShutdownReady = store.PrefixShutdownReady
	PrefixEvents        = store.PrefixEvents
	PrefixIncidents     = store.PrefixIncidents
)

// KeyGuest is a guest's record.
func KeyGuest(name string) string { return PrefixGuests + name }

// KeyDomain is a domain's record.
func KeyDomain(name string) string { return PrefixDomains + name }

// KeyOrder is the manager's current order to node about guest.
func KeyOrder(node, guest string) string { return PrefixOrders + node + "/" + guest }

// KeyReport is node's report about guest.
func KeyReport(node, guest string) string { return PrefixReports + node + "/" + guest }

// KeyCommand is an operator command.
func KeyCommand(id string) string { return PrefixCommands + id }

// Errors the API maps to status codes.
var (
	ErrNotFound = store.ErrNotFound
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("changed concurrently")
	ErrInUse    = errors.New("in use")
)

// Policy is the cluster-wide behaviour the manager runs with.
type Policy struct {
	Fencing        model.FencingMode    `json:"fencing"`
	ShutdownPolicy model.ShutdownPolicy `json:"shutdown_policy"`
	// QuorumLoss: what a host does when it loses the quorate side while it
	// runs guests (empty: stop). freeze needs fencing agent.
	QuorumLoss model.QuorumLossPolicy `json:"quorum_loss"`
	// Preemption lets a guest short of room stop guests of lower priority.
	Preemption bool `json:"preemption"`
	// Reserve is admission control (off when zero): hosts N or percent P.
	Reserve model.Reserve `json:"reserve,omitzero"`
	// Rules are the affinity rules (docs/manager.md).
	Rules []model.Rule `json:"rules,omitempty"`
	// Balance is rebalancing (off when zero).
	Balance model.Balance `json:"balance,omitzero"`
	// Capacity: vCPU overcommit and host reserves, guest overhead, CPU
	// model (nil: model.DefaultCapacity).
	Capacity *model.Capacity `json:"capacity,omitempty"`
	// Hold puts the whole cluster on hold (Pacemaker's maintenance-mode):
	// the manager takes no action at all (no fence, no start, stop or
	// move, no recovery), hosts keep their guests running and, on losing
	// the quorate side, behave as under quorum_loss freeze. For work on
	// the cluster itself, such as moving its store (docs/operations.md).
	// Needs fencing agent. When the hold ends, the manager starts afresh
	// from the store and the hosts' reports.
	Hold bool `json:"hold,omitempty"`
}

// DefaultPolicy is agent fencing, migrate on shutdown, stop on quorum loss
// and no preemption.
func DefaultPolicy() Policy {
	return Policy{Fencing: model.FencingAgent, ShutdownPolicy: model.ShutdownMigrate, QuorumLoss: model.QuorumLossStop}
}

// EffectiveCapacity is p's capacity policy, the default when unset.
func (p Policy) EffectiveCapacity() model.Capacity {
	if p.Capacity == nil {
		return model.DefaultCapacity()
	}
	return *p.Capacity
}

// Guest is a guest under cluster control: the manager's policy and the
// hypervisor definition, stored once for the whole cluster.
type Guest struct {
	Spec    model.GuestSpec     `json:"spec"`
	Def     guestdef.Definition `json:"def"`
	Created time.Time           `json:"created"`
	Updated time.Time           `json:"updated"`
	// Rev is the store revision the record was read at; send it back on an
	// update to detect concurrent changes (0: unconditional).
	Rev int64 `json:"rev,omitempty"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidName reports whether s may name a guest, domain or pool.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// FieldError is a validation failure of one field.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// CheckSpec validates a guest's policy on its own (references to domains and
// nodes are checked against the store by the callers that write).
func CheckSpec(s model.GuestSpec) error {
	switch {
	case !ValidName(s.Name):
		return fieldErr("name", "%q is not a valid name: use letters, digits, '.', '_' or '-', at most 63, starting with a letter or digit", s.Name)
	case s.Memory < 16*model.MiB:
		return fieldErr("memory", "%d bytes is too small: give at least 16MiB", s.Memory)
	case s.CPUs < 1 || s.CPUs > 1024:
		return fieldErr("cpus", "%d is out of range 1..1024", s.CPUs)
	case s.MaxRestarts < 0 || s.MaxRestarts > 1000:
		return fieldErr("max_restarts", "%d is out of range 0..1000", s.MaxRestarts)
	case s.MaxRelocations < 0 || s.MaxRelocations > 1000:
		return fieldErr("max_relocations", "%d is out of range 0..1000", s.MaxRelocations)
	case s.Priority < 0 || s.Priority > model.MaxPriority:
		return fieldErr("priority", "%d is out of range 0..%d", s.Priority, model.MaxPriority)
	case s.RestartWindow < 0:
		return fieldErr("restart_window", "must not be negative")
	case s.Domain != "" && !ValidName(s.Domain):
		return fieldErr("domain", "%q is not a valid domain name", s.Domain)
	}
	if len(s.Tags) > model.MaxTags {
		return fieldErr("tags", "%d tags is too many: at most %d", len(s.Tags), model.MaxTags)
	}
	seenTag := map[string]bool{}
	for i, t := range s.Tags {
		if !ValidTag(t) {
			return fieldErr(fmt.Sprintf("tags[%d]", i), "%q is not a valid tag: use lower-case letters, digits, '.', '_' or '-', at most %d, starting with a letter or digit", t, model.MaxTagLen)
		}
		if seenTag[t] {
			return fieldErr(fmt.Sprintf("tags[%d]", i), "%q is listed twice", t)
		}
		seenTag[t] = true
	}
	switch s.State {
	case model.DesiredStarted, model.DesiredStopped, model.DesiredDisabled:
	default:
		return fieldErr("state", "%q is not one of started, stopped, disabled", s.State)
	}
	switch s.Recovery {
	case model.RecoveryRestart, model.RecoveryRelocate, model.RecoveryDisable:
	default:
		return fieldErr("recovery", "%q is not one of restart, relocate, disable", s.Recovery)
	}
	if s.CPUModel == model.CPUModelAuto {
		return fieldErr("cpu_model", "auto is the cluster's choice: leave it empty to use the cluster's model")
	}
	if s.CPUModel != "" {
		if err := model.CheckCPUModel(s.CPUModel); err != nil {
			return fieldErr("cpu_model", "%v", err)
		}
	}
	return nil
}

// ValidTag reports whether t can be a guest tag: 1..MaxTagLen characters
// of lower-case letters, digits, '.', '_' or '-', starting with a letter or
// digit (safe in URLs, shell words and HTML without quoting).
func ValidTag(t string) bool {
	if t == "" || len(t) > model.MaxTagLen {
		return false
	}
	for i, c := range t {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// HasTag reports whether the spec carries tag t.
func HasTag(s model.GuestSpec, t string) bool {
	for _, x := range s.Tags {
		if x == t {
			return true
		}
	}
	return false
}

// CheckDomain validates a domain on its own.
func CheckDomain(d model.Domain) error {
	if !ValidName(d.Name) {
		return fieldErr("name", "%q is not a valid name", d.Name)
	}
	if len(d.Members) == 0 {
		return fieldErr("members", "a domain needs at least one member")
	}
	seen := map[string]bool{}
	for i, m := range d.Members {
		if m.Node == "" {
			return fieldErr(fmt.Sprintf("members[%d].node", i), "missing")
		}
		if seen[m.Node] {
			return fieldErr(fmt.Sprintf("members[%d].node", i), "%q is listed twice", m.Node)
		}
		seen[m.Node] = true
	}
	return nil
}

// OpsPerTxn keeps a transaction under etcd's default limits (128
// operations and 1.5 MiB per request) when its operations are records of
// a few KiB: orders, guests, events.
const OpsPerTxn = 64

// Store reads and writes the cluster records.
type Store struct {
	st  *store.Store
	cli *clientv3.Client
}

// New wraps a connected store.
func New(st *store.Store) *Store { return &Store{st: st, cli: st.Client()} }

// Raw is the underlying store.
func (s *Store) Raw() *store.Store { return s.st }

func getJSON(ctx context.Context, cli *clientv3.Client, key string, v any) (int64, error) {
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, ErrNotFound
	}
	if err := store.Decode(key, resp.Kvs[0].Value, v); err != nil {
		return 0, err
	}
	return resp.Kvs[0].ModRevision, nil
}

// values drops the revisions.
func values[T any](rs []Record[T]) []T {
	out := make([]T, len(rs))
	for i, r := range rs {
		out[i] = r.Value
	}
	return out
}

// replace puts v's record at key, unless the record there is of a newer
// schema than this build reads (a *model.SchemaError: a newer agent wrote
// it, and this one would lose what it does not know) or changed meanwhile
// (then it reads again).
func (s *Store) replace(ctx context.Context, key string, v any) error {
	val := store.MustEncode(key, v)
	for {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		rev := int64(0)
		if len(resp.Kvs) == 1 {
			if err := store.CheckSchema(key, resp.Kvs[0].Value); err != nil {
				return err
			}
			rev = resp.Kvs[0].ModRevision
		}
		t, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpPut(key, val)).Commit()
		if err != nil {
			return fmt.Errorf("write %s: %w", key, err)
		}
		if t.Succeeded {
			return nil
		}
	}
}

// Policy reads the cluster policy (the default when never set).
func (s *Store) Policy(ctx context.Context) (Policy, error) {
	var p Policy
	_, err := getJSON(ctx, s.cli, KeyPolicy, &p)
	if errors.Is(err, ErrNotFound) {
		return DefaultPolicy(), nil
	}
	if p.QuorumLoss == "" {
		p.QuorumLoss = model.QuorumLossStop // written before the field existed
	}
	return p, err
}

// SetPolicy writes the cluster policy.
func (s *Store) SetPolicy(ctx context.Context, p Policy) error {
	switch p.Fencing {
	case model.FencingAgent, model.FencingWatchdog:
	default:
		return fieldErr("fencing", "%q is not one of agent, watchdog", p.Fencing)
	}
	switch p.ShutdownPolicy {
	case model.ShutdownMigrate, model.ShutdownStop, model.ShutdownFreeze:
	default:
		return fieldErr("shutdown_policy", "%q is not one of migrate, stop, freeze", p.ShutdownPolicy)
	}
	switch p.QuorumLoss {
	case "", model.QuorumLossStop:
	case model.QuorumLossFreeze:
		if p.Fencing != model.FencingAgent {
			return fieldErr("quorum_loss", "freeze needs fencing agent (fence devices): with the watchdog a host that loses the quorate side must self-fence")
		}
	default:
		return fieldErr("quorum_loss", "%q is not one of stop, freeze", p.QuorumLoss)
	}
	if p.Hold && p.Fencing != model.FencingAgent {
		return fieldErr("hold", "needs fencing agent (fence devices): on hold a host that loses the quorate side keeps its guests, which only fence devices make safe")
	}
	switch r := p.Reserve; {
	case r.Hosts < 0 || r.Percent < 0 || r.Percent > 100:
		return fieldErr("reserve", "hosts must be at least 0 and percent 0..100")
	case r.Hosts > 0 && r.Percent > 0:
		return fieldErr("reserve", "give hosts or percent, not both")
	}
	if p.Capacity != nil {
		if err := p.Capacity.Check(); err != nil {
			return fieldErr("capacity", "%v", err)
		}
	}
	if err := model.CheckRules(p.Rules, nil, nil); err != nil {
		return fieldErr("rules", "%v", err)
	}
	switch b := p.Balance; {
	case b.Mode != "" && b.Mode != model.BalanceOff && b.Mode != model.BalanceManual && b.Mode != model.BalanceAuto:
		return fieldErr("balance", "mode %q is not off, manual or auto", b.Mode)
	case b.Threshold < 0 || b.Threshold > 100 || b.MaxMoves < 0 || b.Cooldown < 0:
		return fieldErr("balance", "threshold is 0..100 points, max_moves and cooldown at least 0")
	}
	return s.replace(ctx, KeyPolicy, p)
}

// ReadSealed reads the record sealed at key (ReadSealed's and
// WriteSealed's records are sealed in the store with the cluster secret
// key: they open only on a current host; the fence configuration is in
// the clear while an older host needs it, store/oldreleases.go), the zero
// T when it was never written. The record's type is its reader's: the fence configuration
// (KeyFenceConfig) is a fence.Config.
func ReadSealed[T any](ctx context.Context, s *Store, key string) (T, error) {
	var v T
	b, err := s.st.GetSealed(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return v, nil
	}
	if err != nil {
		return v, fmt.Errorf("read %s: %w", key, err)
	}
	err = store.Decode(key, b, &v)
	return v, err
}

// WriteSealed writes v sealed at key, unless the record there is of a
// newer schema than this build reads (a newer agent wrote it, and this one
// would lose what it does not know). The caller checks v.
func (s *Store) WriteSealed(ctx context.Context, key string, v any) error {
	if err := s.checkSealedSchema(ctx, key); err != nil {
		return err
	}
	if key == KeyFenceConfig {
		// Sealed, or in the clear while a registered host may run a
		// release that cannot open it.
		return s.st.PutFenceConfig(ctx, []byte(store.MustEncode(key, v)))
	}
	return s.st.PutSealed(ctx, key, []byte(store.MustEncode(key, v)))
}

func (s *Store) checkSealedSchema(ctx context.Context, key string) error {
	if old, err := s.st.GetSealed(ctx, key); err == nil {
		return store.CheckSchema(key, old)
	}
	return nil
}

// NotifyConfig reads the notification configuration (none when never
// set). One that holds a secret (the mail password, a webhook's
// Authorization header) is sealed in the store with the cluster secret
// key, like the fence configuration: it opens only on a current host.
func (s *Store) NotifyConfig(ctx context.Context) (notify.Config, error) {
	c, err := ReadSealed[notify.Config](ctx, s, KeyNotify)
	if err != nil {
		return c, fmt.Errorf("the notification configuration: %w", err)
	}
	return c, nil
}

// SetNotifyConfig writes the notification configuration after checking
// it, sealed when it holds a secret.
func (s *Store) SetNotifyConfig(ctx context.Context, c notify.Config) error {
	if err := c.Check(); err != nil {
		return fieldErr(notify.Field(err), "%v", err)
	}
	if c.HasSecret() {
		return s.WriteSealed(ctx, KeyNotify, c)
	}
	if err := s.checkSealedSchema(ctx, KeyNotify); err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, KeyNotify, store.MustEncode(KeyNotify, c)); err != nil {
		return fmt.Errorf("write the notification configuration: %w", err)
	}
	return nil
}

// Get reads the record at key as a T, and the revision that last wrote it
// (ErrNotFound when there is none). The record's type is its reader's: a
// guest report (KeyReport) is a hostctl.Report.
func Get[T any](ctx context.Context, s *Store, key string) (T, int64, error) {
	var v T
	rev, err := getJSON(ctx, s.cli, key, &v)
	return v, rev, err
}

// Record is a record and the store revision that last wrote it.
type Record[T any] struct {
	Value T
	Rev   int64
}

// List reads every record under prefix as a T, in key order, and the
// revision read at: the orders for a node (PrefixOrders+node+"/") are
// hostctl.Orders.
func List[T any](ctx context.Context, s *Store, prefix string) ([]Record[T], int64, error) {
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", prefix, err)
	}
	out := make([]Record[T], len(resp.Kvs))
	for i, kv := range resp.Kvs {
		if err := store.Decode(string(kv.Key), kv.Value, &out[i].Value); err != nil {
			return nil, 0, err
		}
		out[i].Rev = kv.ModRevision
	}
	return out, resp.Header.Revision, nil
}

// Guest reads one guest.
func (s *Store) Guest(ctx context.Context, name string) (Guest, error) {
	var g Guest
	rev, err := getJSON(ctx, s.cli, KeyGuest(name), &g)
	if errors.Is(err, ErrNotFound) {
		return g, fmt.Errorf("guest %q: %w", name, ErrNotFound)
	}
	g.Rev = rev
	return g, err
}

// GuestsNamed reads the named guests, up to OpsPerTxn in one request
// (a host adopting its guests reads their definitions: one request per
// guest cost 50,000 reads when 1,000 hosts started). A guest not found is
// missing from the answer.
func (s *Store) GuestsNamed(ctx context.Context, names []string) (map[string]Guest, error) {
	out := make(map[string]Guest, len(names))
	for len(names) > 0 {
		n := min(len(names), OpsPerTxn)
		ops := make([]clientv3.Op, n)
		for i, name := range names[:n] {
			ops[i] = clientv3.OpGet(KeyGuest(name))
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("read %d guests: %w", n, err)
		}
		for i, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				var g Guest
				if err := store.Decode(string(kv.Key), kv.Value, &g); err != nil {
					return nil, err
				}
				g.Rev = kv.ModRevision
				out[names[i]] = g
			}
		}
		names = names[n:]
	}
	return out, nil
}

// Guests lists every guest by name.
func (s *Store) Guests(ctx context.Context) ([]Guest, error) {
	rs, _, err := List[Guest](ctx, s, PrefixGuests)
	gs := make([]Guest, len(rs))
	for i, r := range rs {
		gs[i] = r.Value
		gs[i].Rev = r.Rev
	}
	return gs, err
}

// CreateGuest stores a new guest; ErrExists if the name is taken. The
// domain it names must exist.
func (s *Store) CreateGuest(ctx context.Context, g Guest, now time.Time) error {
	if err := CheckSpec(g.Spec); err != nil {
		return err
	}
	g.Def.Name = g.Spec.Name
	g.Created, g.Updated, g.Rev = now, now, 0
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(KeyGuest(g.Spec.Name)), "=", 0)}
	if g.Spec.Domain != "" {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(KeyDomain(g.Spec.Domain)), ">", 0))
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(KeyGuest(g.Spec.Name), store.MustEncode(KeyGuest(g.Spec.Name), g))).Commit()
	if err != nil {
		return fmt.Errorf("create guest %q: %w", g.Spec.Name, err)
	}
	if !resp.Succeeded {
		if _, err := s.Guest(ctx, g.Spec.Name); err == nil {
			return fmt.Errorf("create guest %q: %w", g.Spec.Name, ErrExists)
		}
		return fieldErr("domain", "no failover domain named %q: create it first", g.Spec.Domain)
	}
	return nil
}

// UpdateGuest replaces a guest's record. With g.Rev set, it fails with
// ErrConflict when the record changed since it was read.
func (s *Store) UpdateGuest(ctx context.Context, g Guest, now time.Time) error {
	if err := CheckSpec(g.Spec); err != nil {
		return err
	}
	key := KeyGuest(g.Spec.Name)
	old, err := s.Guest(ctx, g.Spec.Name)
	if err != nil {
		return err
	}
	g.Def.Name = g.Spec.Name
	g.Created, g.Updated = old.Created, now
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), ">", 0)}
	if g.Rev != 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", g.Rev))
	}
	if g.Spec.Domain != "" {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(KeyDomain(g.Spec.Domain)), ">", 0))
	}
	rev := g.Rev
	g.Rev = 0
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(key, store.MustEncode(key, g))).Commit()
	if err != nil {
		return fmt.Errorf("update guest %q: %w", g.Spec.Name, err)
	}
	if !resp.Succeeded {
		if rev != 0 {
			if cur, err := s.Guest(ctx, g.Spec.Name); err == nil && cur.Rev != rev {
				return fmt.Errorf("update guest %q: %w: read it again and retry", g.Spec.Name, ErrConflict)
			}
		}
		return fieldErr("domain", "no failover domain named %q", g.Spec.Domain)
	}
	return nil
}

// DeleteGuest removes a guest's record; ErrNotFound if absent. The caller
// checks that it no longer runs.
func (s *Store) DeleteGuest(ctx context.Context, name string) error {
	resp, err := s.cli.Delete(ctx, KeyGuest(name))
	if err != nil {
		return fmt.Errorf("delete guest %q: %w", name, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("guest %q: %w", name, ErrNotFound)
	}
	return nil
}

// Domain reads one domain.
func (s *Store) Domain(ctx context.Context, name string) (model.Domain, error) {
	var d model.Domain
	_, err := getJSON(ctx, s.cli, KeyDomain(name), &d)
	if errors.Is(err, ErrNotFound) {
		return d, fmt.Errorf("domain %q: %w", name, ErrNotFound)
	}
	return d, err
}

// Domains lists every domain by name.
func (s *Store) Domains(ctx context.Context) ([]model.Domain, error) {
	rs, _, err := List[model.Domain](ctx, s, PrefixDomains)
	return values(rs), err
}

// PutDomain creates (create=true, ErrExists if taken) or replaces
// (ErrNotFound if absent) a domain. Members must be registered nodes.
func (s *Store) PutDomain(ctx context.Context, d model.Domain, create bool) error {
	if err := CheckDomain(d); err != nil {
		return err
	}
	key := KeyDomain(d.Name)
	var cmps []clientv3.Cmp
	if create {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
	} else {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), ">", 0))
	}
	for _, m := range d.Members {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(store.KeyNodeReg(m.Node)), ">", 0))
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(key, store.MustEncode(key, d))).Commit()
	if err != nil {
		return fmt.Errorf("write domain %q: %w", d.Name, err)
	}
	if resp.Succeeded {
		return nil
	}
	_, err = s.Domain(ctx, d.Name)
	switch {
	case create && err == nil:
		return fmt.Errorf("create domain %q: %w", d.Name, ErrExists)
	case !create && errors.Is(err, ErrNotFound):
		return err
	}
	for i, m := range d.Members {
		if _, err := s.st.Node(ctx, m.Node); err != nil {
			return fieldErr(fmt.Sprintf("members[%d].node", i), "no host named %q in this cluster", m.Node)
		}
	}
	return fmt.Errorf("write domain %q: %w", d.Name, ErrConflict)
}

// DeleteDomain removes a domain no guest uses.
func (s *Store) DeleteDomain(ctx context.Context, name string) error {
	guests, err := s.Guests(ctx)
	if err != nil {
		return err
	}
	var users []string
	for _, g := range guests {
		if g.Spec.Domain == name {
			users = append(users, g.Spec.Name)
		}
	}
	if len(users) > 0 {
		return fmt.Errorf("delete domain %q: %w by guests %s: move them to another domain first", name, ErrInUse, strings.Join(users, ", "))
	}
	resp, err := s.cli.Delete(ctx, KeyDomain(name))
	if err != nil {
		return fmt.Errorf("delete domain %q: %w", name, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("domain %q: %w", name, ErrNotFound)
	}
	return nil
}
