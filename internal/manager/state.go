package manager

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/placement"
)

// State is the manager's whole view: configuration, nodes, domains, guests
// and their runtime state. It is plain data (see Restore); Step changes it in
// place. Nodes and Guests are kept sorted by name.
type State struct {
	// Schema is the version of this format (StateSchema when saved). A
	// state saved before versions existed reads as 0 and is format 1.
	Schema  int            `json:"schema,omitempty"`
	Config  Config         `json:"config"`
	Nodes   []*Node        `json:"nodes"`
	Domains []model.Domain `json:"domains,omitempty"`
	Guests  []*Guest       `json:"guests"`
	NextID  uint64         `json:"next_id"`
	// UpSeq counts changes that bring a node up or out of maintenance; a
	// failback that failed is retried once it moves on.
	UpSeq uint64 `json:"up_seq"`
	// Rules are the affinity rules (see rules.go).
	Rules []model.Rule `json:"rules,omitempty"`
	// Broken are the rules the current placement breaks, as last reported.
	Broken []string `json:"broken,omitempty"`
	// Short is how much memory admission control's promise lacked at the
	// last step (0: it holds or is off).
	Short int64 `json:"short,omitempty"`
	// CPUShort is the same for vCPUs (thousandths), when they are counted.
	CPUShort int64 `json:"cpu_short,omitempty"`
	// Proposal is the rebalancing move last proposed (balance: manual).
	Proposal string `json:"proposal,omitempty"`

	nodeIdx  map[string]int
	guestIdx map[string]int
	tiers    map[string][][]int
	rules    *ruleSet // the affinity rules as placement applies them
	calm     *calm    // the guests not quiet after the last step (calm.go)
}

// New returns an empty state for a cluster with the given configuration.
func New(cfg Config) *State {
	if cfg.Fencing == "" {
		cfg.Fencing = model.FencingAgent
	}
	if cfg.ShutdownPolicy == "" {
		cfg.ShutdownPolicy = model.ShutdownMigrate
	}
	if cfg.QuorumLoss == "" {
		cfg.QuorumLoss = model.QuorumLossStop
	}
	if cfg.Timings == (Timings{}) {
		cfg.Timings = DefaultTimings()
	}
	s := &State{Schema: StateSchema, Config: cfg, NextID: 1}
	s.reindex()
	return s
}

// AddNode configures a node (offline until a Sync or NodeUp says otherwise).
func (s *State) AddNode(name string, memory int64, cpus int) error {
	return s.AddNodes([]NodeConfig{{Name: name, Memory: memory, CPUs: cpus}})
}

// NodeConfig is one node for AddNodes.
type NodeConfig struct {
	Name   string
	Memory int64
	CPUs   int
}

// AddNodes configures several nodes as AddNode does each, sorting and
// indexing once: a cluster of n nodes is configured in O(n log n), not
// O(n²) (the simulator's large scenarios).
func (s *State) AddNodes(nodes []NodeConfig) error {
	s.forget()
	seen := make(map[string]bool, len(nodes))
	for _, c := range nodes {
		if _, ok := s.nodeIdx[c.Name]; ok || seen[c.Name] {
			return fmt.Errorf("add node %q: already configured", c.Name)
		}
		seen[c.Name] = true
	}
	for _, c := range nodes {
		s.Nodes = append(s.Nodes, &Node{Name: c.Name, Memory: c.Memory, CPUs: c.CPUs, Status: NodeOffline})
	}
	sort.Slice(s.Nodes, func(a, b int) bool { return s.Nodes[a].Name < s.Nodes[b].Name })
	s.reindex()
	return nil
}

// SetWitness marks a configured node as a witness (it votes for quorum and
// never runs guests) or as an ordinary node. A NodeUp or Sync report also
// sets it from NodeReport.Witness.
func (s *State) SetWitness(name string, witness bool) error {
	s.forget()
	n := s.node(name)
	if n == nil {
		return fmt.Errorf("set witness %q: %w", name, ErrUnknownNode)
	}
	n.Witness = witness
	return nil
}

// Witnesses returns the names of the witness nodes, in name order.
func (s *State) Witnesses() []string {
	var out []string
	for _, n := range s.Nodes {
		if n.Witness {
			out = append(out, n.Name)
		}
	}
	return out
}

// AddDomain configures a failover domain. Members must be configured nodes.
func (s *State) AddDomain(d model.Domain) error {
	s.forget()
	for _, x := range s.Domains {
		if x.Name == d.Name {
			return fmt.Errorf("add domain %q: already configured", d.Name)
		}
	}
	for _, m := range d.Members {
		if _, ok := s.nodeIdx[m.Node]; !ok {
			return fmt.Errorf("add domain %q: member %q: %w", d.Name, m.Node, ErrUnknownNode)
		}
	}
	s.Domains = append(s.Domains, d)
	s.tiers = nil
	return nil
}

// AddGuest configures a guest. With running set it runs on spec.Node now
// (adopted without a start); otherwise a guest whose desired state is
// started is placed by the next step, on spec.Node when it can take it.
func (s *State) AddGuest(spec model.GuestSpec, running bool) error {
	s.forget()
	if _, ok := s.guestIdx[spec.Name]; ok {
		return fmt.Errorf("add guest %q: already configured", spec.Name)
	}
	if spec.Node != "" {
		if _, ok := s.nodeIdx[spec.Node]; !ok {
			return fmt.Errorf("add guest %q: node %q: %w", spec.Name, spec.Node, ErrUnknownNode)
		}
	}
	if spec.Domain != "" && s.domain(spec.Domain) == nil {
		return fmt.Errorf("add guest %q: domain %q is not configured", spec.Name, spec.Domain)
	}
	if len(spec.After) > 0 {
		if err := s.CheckDependencies(&spec); err != nil {
			return fmt.Errorf("add guest %q: %w", spec.Name, err)
		}
	}
	g := &Guest{Spec: spec, Node: spec.Node}
	switch {
	case running && spec.Node != "":
		g.Running = true
		g.State = GuestStarted
	case spec.State == model.DesiredDisabled:
		g.State = GuestDisabled
	case spec.State == model.DesiredStopped:
		g.State = GuestStopped
	default:
		g.State = GuestRecovering
		g.Need = NeedNode
	}
	if n := len(s.Guests); n > 0 && s.Guests[n-1].Spec.Name > spec.Name {
		s.Guests = append(s.Guests, g)
		sort.Slice(s.Guests, func(a, b int) bool { return s.Guests[a].Spec.Name < s.Guests[b].Spec.Name })
		s.reindex()
		return nil
	}
	// Added in name order: no sort needed.
	s.Guests = append(s.Guests, g)
	s.guestIdx[spec.Name] = len(s.Guests) - 1
	return nil
}

// Restore decodes a state saved with json.Marshal and checks it.
func Restore(data []byte) (*State, error) {
	s, err := decodeState(data)
	if err != nil {
		return nil, err
	}
	return s.checkRestored()
}

// decodeState decodes a state saved with json.Marshal in one pass (at
// 50,000 guests each costs a quarter of a second): the schema is checked
// after the decoding, and, when that fails, before it, so that a newer
// format is refused as one.
func decodeState(data []byte) (*State, error) {
	s := &State{}
	if err := json.Unmarshal(data, s); err != nil {
		var head struct {
			Schema int `json:"schema"`
		}
		if json.Unmarshal(data, &head) == nil && head.Schema > StateSchema {
			return nil, &SchemaError{What: "manager state", Have: head.Schema, Know: StateSchema}
		}
		return nil, fmt.Errorf("restore manager state: %w", err)
	}
	if s.Schema > StateSchema {
		return nil, &SchemaError{What: "manager state", Have: s.Schema, Know: StateSchema}
	}
	return s, nil
}

// checkRestored sorts and indexes a decoded state and checks it.
func (s *State) checkRestored() (*State, error) {
	// Formats 0 (before versions) and 1 read alike; the next save is 1.
	s.Schema = StateSchema
	sort.Slice(s.Nodes, func(a, b int) bool { return s.Nodes[a].Name < s.Nodes[b].Name })
	sort.Slice(s.Guests, func(a, b int) bool { return s.Guests[a].Spec.Name < s.Guests[b].Spec.Name })
	s.reindex()
	if len(s.nodeIdx) != len(s.Nodes) || len(s.guestIdx) != len(s.Guests) {
		return nil, fmt.Errorf("restore manager state: duplicate node or guest names")
	}
	for _, g := range s.Guests {
		if g.Node != "" && s.node(g.Node) == nil {
			return nil, fmt.Errorf("restore manager state: guest %q on unknown node %q", g.Spec.Name, g.Node)
		}
	}
	if s.NextID == 0 {
		s.NextID = 1
	}
	return s, nil
}

// Patch is one change to a state saved with json.Marshal, as package
// savedstate logs it: Top is the JSON of the state's fields other than
// its nodes and guests, whole, when any of them changed; Nodes and Guests
// are the JSON of the records that changed, each whole; then the names of
// the records removed.
type Patch struct {
	Top                         []byte
	Nodes, Guests               [][]byte
	RemovedNodes, RemovedGuests []string
}

// PatchError is a patch RestorePatched could not apply: the Index-th.
type PatchError struct {
	Index int
	Err   error
}

func (e *PatchError) Error() string { return fmt.Sprintf("patch %d: %v", e.Index, e.Err) }
func (e *PatchError) Unwrap() error { return e.Err }

// RestorePatched restores base (as Restore) with patches applied in
// order: the state Restore would make of the JSON they give together,
// each record decoded once (a new manager's takeover at 50,000 guests
// otherwise parses the whole state three more times).
func RestorePatched(base []byte, patches []Patch) (*State, error) {
	s, err := decodeState(base)
	if err != nil {
		return nil, err
	}
	nodes := make(map[string]int, len(s.Nodes))
	for i, n := range s.Nodes {
		nodes[n.Name] = i
	}
	guests := make(map[string]int, len(s.Guests))
	for i, g := range s.Guests {
		guests[g.Spec.Name] = i
	}
	for i, p := range patches {
		if err := s.patch(p, nodes, guests); err != nil {
			return nil, &PatchError{Index: i, Err: err}
		}
	}
	s.Nodes = slices.DeleteFunc(s.Nodes, func(n *Node) bool { return n == nil })
	s.Guests = slices.DeleteFunc(s.Guests, func(g *Guest) bool { return g == nil })
	return s.checkRestored()
}

// patch applies p; nodes and guests index s's records by name (a removed
// one is left nil until the end).
func (s *State) patch(p Patch, nodes, guests map[string]int) error {
	if len(p.Top) > 0 {
		var t State
		if err := json.Unmarshal(p.Top, &t); err != nil {
			return fmt.Errorf("top: %w", err)
		}
		if t.Schema > StateSchema {
			return &SchemaError{What: "manager state", Have: t.Schema, Know: StateSchema}
		}
		t.Nodes, t.Guests = s.Nodes, s.Guests
		*s = t
	}
	for _, name := range p.RemovedNodes {
		if i, ok := nodes[name]; ok {
			s.Nodes[i] = nil
			delete(nodes, name)
		}
	}
	for _, name := range p.RemovedGuests {
		if i, ok := guests[name]; ok {
			s.Guests[i] = nil
			delete(guests, name)
		}
	}
	for i, b := range p.Nodes {
		n := &Node{}
		if err := json.Unmarshal(b, n); err != nil {
			return fmt.Errorf("nodes[%d]: %w", i, err)
		}
		if n.Name == "" {
			return fmt.Errorf("nodes[%d] has no name", i)
		}
		if j, ok := nodes[n.Name]; ok {
			s.Nodes[j] = n
		} else {
			nodes[n.Name] = len(s.Nodes)
			s.Nodes = append(s.Nodes, n)
		}
	}
	for i, b := range p.Guests {
		g := &Guest{}
		if err := json.Unmarshal(b, g); err != nil {
			return fmt.Errorf("guests[%d]: %w", i, err)
		}
		if g.Spec.Name == "" {
			return fmt.Errorf("guests[%d] has no name", i)
		}
		if j, ok := guests[g.Spec.Name]; ok {
			s.Guests[j] = g
		} else {
			guests[g.Spec.Name] = len(s.Guests)
			s.Guests = append(s.Guests, g)
		}
	}
	return nil
}

// StateSchema is the version of the manager state's format that this
// build writes; Restore reads every version up to it. Bump it when a
// change would make an older agent misread the state (a field whose
// absence it would take wrongly), and keep reading the older versions.
const StateSchema = 1

// SchemaError reports stored data of a format newer than this build
// reads (model.SchemaError).
type SchemaError = model.SchemaError

// Guest returns the guest named name, or nil.
func (s *State) Guest(name string) *Guest {
	if i, ok := s.guestIdx[name]; ok {
		return s.Guests[i]
	}
	return nil
}

// Node returns the node named name, or nil.
func (s *State) Node(name string) *Node { return s.node(name) }

func (s *State) node(name string) *Node {
	if i, ok := s.nodeIdx[name]; ok {
		return s.Nodes[i]
	}
	return nil
}

func (s *State) domain(name string) *model.Domain {
	for i := range s.Domains {
		if s.Domains[i].Name == name {
			return &s.Domains[i]
		}
	}
	return nil
}

func (s *State) reindex() {
	s.nodeIdx = make(map[string]int, len(s.Nodes))
	for i, n := range s.Nodes {
		s.nodeIdx[n.Name] = i
	}
	s.guestIdx = make(map[string]int, len(s.Guests))
	for i, g := range s.Guests {
		s.guestIdx[g.Spec.Name] = i
	}
	s.tiers = nil
	s.rules = nil
	s.calm = nil
}

// tiersOf returns the guest's tiers of node indices (nil: one tier of all).
func (s *State) tiersOf(g *Guest) [][]int {
	if g.Spec.Domain == "" {
		return nil
	}
	if s.tiers == nil {
		s.tiers = map[string][][]int{}
	}
	if t, ok := s.tiers[g.Spec.Domain]; ok {
		return t
	}
	d := s.domain(g.Spec.Domain)
	if d == nil {
		return nil
	}
	t := placement.Tiers(*d, func(n string) int {
		if i, ok := s.nodeIdx[n]; ok {
			return i
		}
		return -1
	}, len(s.Nodes))
	s.tiers[g.Spec.Domain] = t
	return t
}

// allowed reports whether node may run guest g at all (restricted domains).
func (s *State) allowed(g *Guest, node string) bool {
	if g.Spec.Domain == "" {
		return true
	}
	d := s.domain(g.Spec.Domain)
	if d == nil || !d.Restricted {
		return true
	}
	for _, m := range d.Members {
		if m.Node == node {
			return true
		}
	}
	return false
}

// NextTimer returns the earliest moment at which a step would do something
// because time passed (fence retry, watchdog deadline, restart delay, end of
// a migration backoff), and
// false when nothing waits on time. Callers step at that moment as well as at
// every Tick.
func (s *State) NextTimer() (time.Time, bool) {
	var t time.Time
	ok := false
	take := func(x time.Time) {
		if !ok || x.Before(t) {
			t, ok = x, true
		}
	}
	for _, n := range s.Nodes {
		if n.Status == NodeFailed && n.Fence != nil {
			if s.Config.Fencing == model.FencingWatchdog {
				take(n.Fence.DeadlineAt)
			} else if !n.Fence.InFlight {
				take(n.Fence.RetryAt)
			}
		}
	}
	s.Unquiet(func(g *Guest) { // a quiet guest is started, not recovering
		if g.State == GuestRecovering && g.Op == nil && !g.RetryAt.IsZero() {
			take(g.RetryAt)
		}
		if !g.MoveFailedAt.IsZero() {
			take(g.MoveRetryAt()) // the end of a migration backoff (plan.go)
		}
	})
	return t, ok
}

// Usage returns the memory and the number of guests counted on each node
// (running, starting, stopping, frozen, or arriving by migration), by name.
func (s *State) Usage() map[string]int64 {
	used := make([]int64, len(s.Nodes))
	cnt := make([]int, len(s.Nodes))
	s.count(used, cnt, nil)
	m := make(map[string]int64, len(s.Nodes))
	for i, n := range s.Nodes {
		m[n.Name] = used[i]
	}
	return m
}

// count adds up, per node index, the memory (guestMem), the guests and,
// when cpus is not nil, the vCPUs (guestCPUs) counted there.
func (s *State) count(used []int64, cnt []int, cpus []int64) {
	s.countGuests(s.Guests, used, cnt, cpus)
}

// countGuests is count over the guests gs.
func (s *State) countGuests(gs []*Guest, used []int64, cnt []int, cpus []int64) {
	for _, g := range gs {
		s.countGuest(g, 1, used, cnt, cpus)
	}
}

// countGuest adds (sign 1) or takes away (-1) what g counts, per node index.
func (s *State) countGuest(g *Guest, sign int, used []int64, cnt []int, cpus []int64) {
	m, c := s.guestMem(g), s.guestCPUs(g)
	add := func(node string) {
		if i, ok := s.nodeIdx[node]; ok && node != "" {
			used[i] += int64(sign) * m
			cnt[i] += sign
			if cpus != nil {
				cpus[i] += int64(sign) * c
			}
		}
	}
	countedAt(g, add)
}

// countedAt calls add with each node g counts on: where it runs or is
// frozen, or is being started; and where a migration takes it.
func countedAt(g *Guest, add func(node string)) {
	switch {
	case g.Running || g.State == GuestFrozen:
		add(g.Node)
	case g.Op != nil && g.Op.Kind == OpStart:
		add(g.Op.Node)
	}
	if g.Op != nil && g.Op.Target != "" {
		add(g.Op.Target)
	}
}

// checkInvariants panics when the state contradicts itself: that is a bug
// in this package, never an expected condition.
func (s *State) checkInvariants(gs []*Guest) {
	for _, g := range gs {
		bad := func(why string) {
			panic(fmt.Sprintf("manager: guest %q: %s (state %s, node %q, running %v, op %+v)", g.Spec.Name, why, g.State, g.Node, g.Running, g.Op))
		}
		if g.Running && s.node(g.Node) == nil {
			bad("running on no node")
		}
		if g.Op != nil && s.node(g.Op.Node) == nil {
			bad("operation on no node")
		}
		if g.PreemptOn != "" && (g.State != GuestRecovering || g.Op != nil) {
			bad("waits for a preemption but is not a recovering guest")
		}
		switch g.State {
		case GuestStarted:
			if !g.Running && g.Op == nil {
				bad("started but neither running nor being started")
			}
		case GuestRecovering:
			if g.Running || g.Op != nil {
				bad("recovering but running or busy")
			}
		case GuestFencing:
			if n := s.node(g.Node); n == nil || n.Status != NodeFailed {
				bad("fencing but its node is not failed")
			}
		case GuestStopped, GuestDisabled, GuestFrozen:
			if g.Running && g.Op == nil {
				bad("running with no stop in progress")
			}
		}
	}
}
