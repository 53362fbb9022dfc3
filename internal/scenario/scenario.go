// Package scenario owns the scenario file format of `haven sim` (see
// docs/scenarios.md and SCENARIOS.md): parsing with yaml.v3's Node API so
// every error names the file, line and key, and validation of names, values
// and references before anything runs.
package scenario

import (
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/model"
)

// Scenario is a parsed, validated scenario file.
type Scenario struct {
	File        string
	Name        string
	Description string
	Fencing     model.FencingMode
	Shutdown    model.ShutdownPolicy
	QuorumLoss  model.QuorumLossPolicy
	Preemption  bool
	Settle      time.Duration
	Reserve     model.Reserve // admission control (off when zero)
	Balance     model.Balance // rebalancing (off when zero)
	// Capacity: host reserves, guest overhead, vCPU counting, CPU model
	// (all off when zero).
	Capacity model.Capacity
	Nodes    []Node
	Domains  []model.Domain
	Guests   []Guest
	Rules    []model.Rule // affinity rules
	Events   []Event      // sorted by time, file order within a time
	Expects  []Expect
}

// End is the time the run ends: the last event plus settle.
func (s *Scenario) End() time.Duration {
	var last time.Duration
	for _, e := range s.Events {
		last = max(last, e.At)
	}
	return last + s.Settle
}

// Node is a configured node.
type Node struct {
	Name    string
	Memory  int64
	CPUs    int
	PowerOn bool
	Witness bool // votes for quorum, never runs a guest
	// CPUModels are the CPU models the node offers (empty: not known, any
	// model is accepted there).
	CPUModels []string
	Line      int
}

// Faults are the simulator's misbehaviours of one guest.
type Faults struct {
	StartFailures   int
	MigrateFailures int
	StopFails       bool
}

// Guest is a configured guest; Spec.Node is where it is at t=0.
type Guest struct {
	Spec   model.GuestSpec
	Faults Faults
	// GuestAgent and Health: the guest runs a guest agent (its heartbeat
	// notices a hang), and its health checks (the simulator keeps their
	// timing: see docs/manager.md).
	GuestAgent bool
	Health     []guestdef.Check
	Line       int

	afterLine int
}

// EventKind is the verb of an event.
type EventKind string

const (
	PowerOff       EventKind = "power off"
	PowerOn        EventKind = "power on"
	NetworkOff     EventKind = "network off"
	NetworkOn      EventKind = "network on"
	Partition      EventKind = "partition"
	Heal           EventKind = "heal"
	Reboot         EventKind = "reboot"
	Shutdown       EventKind = "shutdown"
	Crash          EventKind = "crash"
	ServiceDies    EventKind = "service dies" // service GUEST dies: its health checks fail, the guest runs on
	Hang           EventKind = "hang"         // the guest's kernel hangs: nothing in it answers
	Panic          EventKind = "panic"        // the guest's kernel panics (seen at once by pvpanic)
	AgentRestart   EventKind = "agent restart"
	FenceFails     EventKind = "fence fails"
	FenceWorks     EventKind = "fence works"
	MaintenanceOn  EventKind = "maintenance on"
	MaintenanceOff EventKind = "maintenance off"
	ConfirmOff     EventKind = "confirm off"
	Start          EventKind = "start"
	Stop           EventKind = "stop"
	Disable        EventKind = "disable"
	Migrate        EventKind = "migrate"
	Relocate       EventKind = "relocate"
)

// Event is one scheduled happening.
type Event struct {
	At     time.Duration
	Do     string // as written
	Kind   EventKind
	Node   string
	Guest  string
	Groups [][]string // partition groups as written (the rest form one more)
	Line   int
}

// ExpectKind is what an expectation checks.
type ExpectKind string

const (
	ExpectGuest     ExpectKind = "guest"
	ExpectNode      ExpectKind = "node"
	ExpectFenced    ExpectKind = "fenced"
	ExpectNotFenced ExpectKind = "not_fenced"
	// ExpectNeverStopped: the guest ran from t=0 to the end without a stop,
	// crash or restart (a live migration is not a stop).
	ExpectNeverStopped ExpectKind = "never_stopped"
)

// Expect is one expectation.
type Expect struct {
	Kind  ExpectKind
	At    time.Duration // for at: (End() when AtEnd)
	AtEnd bool
	By    bool // reached at some moment no later than At
	Guest string
	Node  string
	State string
	Times int // fenced: exact count, -1 when not given
	Line  int
}
