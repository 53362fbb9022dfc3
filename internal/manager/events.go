package manager

import (
	"fmt"
	"time"

	"github.com/haven-ha/haven/internal/model"
)

// Event is something the manager learns: from the store (leases), from
// agents (guest results and inventories), from fence devices, from
// operators, or the passing of time.
type Event interface{ isEvent() }

// Tick is the periodic step; it lets timers (fence retries, restart delays,
// watchdog deadlines, restart windows) fire. The caller also steps at
// State.NextTimer.
type Tick struct{}

// NodeReport is what the store holds of a live node: its facts under its
// lease and its agent's inventory of running guests.
type NodeReport struct {
	Name   string `json:"name"`
	Memory int64  `json:"memory,omitempty"` // 0: keep the configured value
	CPUs   int    `json:"cpus,omitempty"`
	// CPUModels are the CPU models the host offers (model.NodeFacts);
	// nil: keep the last reported.
	CPUModels []string `json:"cpu_models,omitempty"`
	BootID    string   `json:"boot_id,omitempty"`
	Running   []string `json:"running,omitempty"` // guests running on it
	// Stale: the node's agent cannot be reached now (its lease lives on), so
	// Running is not current and is ignored.
	Stale bool `json:"stale,omitempty"`
	// BootedAt is when this incarnation of the node booted (zero: unknown).
	BootedAt time.Time `json:"booted_at,omitempty"`
	// Witness: the node's agent runs as a witness (votes, runs no guest).
	Witness bool `json:"witness,omitempty"`
	// SelfFenced are guests its agent killed in a self-fence and that have
	// not run there since: if recorded running there, they died with the
	// node (GuestCrashed.SelfFence), not on their own.
	SelfFenced []string `json:"self_fenced,omitempty"`
}

// Sync gives a newly elected manager (and the first step) the full picture:
// every node with a live lease and its inventory. Nodes not listed are down.
type Sync struct{ Nodes []NodeReport }

// NodeUp: a node acquired a lease (booted, rejoined, reconnected after its
// lease expired).
type NodeUp struct{ NodeReport }

// NodeDown: a node's lease expired.
type NodeDown struct{ Node string }

// NodeLeft: a node revoked its lease cleanly at the end of a graceful
// shutdown (after ActShutdownReady). It is not fenced.
type NodeLeft struct{ Node string }

// NodeShutdown: a node's host is shutting down or rebooting gracefully and
// waits for ActShutdownReady.
type NodeShutdown struct {
	Node   string
	Reboot bool
}

// Inventory is an agent's list of guests running on its node, sent after an
// agent restart (adoption) or whenever the agent resynchronizes.
type Inventory struct {
	Node    string
	Running []string
}

// ResultKind is the outcome an agent reports for an operation.
type ResultKind string

const (
	ResultStarted       ResultKind = "started"
	ResultStartFailed   ResultKind = "start_failed"
	ResultStopped       ResultKind = "stopped"
	ResultStopFailed    ResultKind = "stop_failed"
	ResultMigrated      ResultKind = "migrated"
	ResultMigrateFailed ResultKind = "migrate_failed"
)

// GuestResult is the outcome of the operation Op on a guest. Results whose
// Op is not the guest's operation in flight are stale and ignored.
type GuestResult struct {
	Guest  string
	Node   string
	Op     uint64
	Result ResultKind
	Err    string
}

// GuestCrashed: a guest died unexpectedly on a node whose agent is fine.
type GuestCrashed struct {
	Guest string
	Node  string
	// Reason is how it died as its host saw it (e.g. "guest panicked", or
	// the health check that failed and its last output); for the log.
	Reason string
	// SelfFence: its host killed it when it lost the quorate side (its
	// self-fence). It died with its node, not on its own: it is recovered
	// as after a node failure (placed, no restart or move counted).
	SelfFence bool
}

// FenceResult is a fence device's answer to attempt Attempt.
type FenceResult struct {
	Node    string
	Attempt uint64
	OK      bool
	Err     string
	// At is when the device confirmed the node off (zero: unknown). With
	// NodeReport.BootedAt it tells whether a node that reported in while
	// the attempt was in flight was powered off by it or booted after it.
	At time.Time
}

// CommandKind is an operator command (model.CommandKind: the store's
// command records carry it).
type CommandKind = model.CommandKind

// The operator commands (model's).
const (
	CmdStart          = model.CmdStart
	CmdStop           = model.CmdStop
	CmdDisable        = model.CmdDisable
	CmdMigrate        = model.CmdMigrate
	CmdRelocate       = model.CmdRelocate
	CmdMaintenanceOn  = model.CmdMaintenanceOn
	CmdMaintenanceOff = model.CmdMaintenanceOff
	CmdConfirmOff     = model.CmdConfirmOff
)

// Command is an operator command as an event of the core: a
// model.Command, converted both ways.
type Command model.Command

func (c Command) String() string { return model.Command(c).String() }

func (Tick) isEvent()         {}
func (Sync) isEvent()         {}
func (NodeUp) isEvent()       {}
func (NodeDown) isEvent()     {}
func (NodeLeft) isEvent()     {}
func (NodeShutdown) isEvent() {}
func (Inventory) isEvent()    {}
func (GuestResult) isEvent()  {}
func (GuestCrashed) isEvent() {}
func (FenceResult) isEvent()  {}
func (Command) isEvent()      {}

// ActionKind is what the caller must do.
type ActionKind string

const (
	ActStart         ActionKind = "start"          // start Guest on Node
	ActStop          ActionKind = "stop"           // stop Guest on Node (Force: forced)
	ActMigrate       ActionKind = "migrate"        // live-migrate Guest from Node to Target
	ActFence         ActionKind = "fence"          // fence (power off) Node; Op is the attempt id
	ActShutdownReady ActionKind = "shutdown-ready" // Node's host may proceed with its shutdown
	ActPersist       ActionKind = "persist"        // save the state (json.Marshal) before acting further
	ActLog           ActionKind = "log"            // Msg for the timeline / log
	ActReject        ActionKind = "reject"         // an operator command was rejected: Msg, Err
)

// Action is one piece of work for the caller. Results of guest operations
// come back as GuestResult with the same Op; fence results as FenceResult
// with Attempt = Op.
type Action struct {
	Kind   ActionKind
	Guest  string
	Node   string
	Target string
	Op     uint64
	Force  bool
	Msg    string
	Err    error
	// CPUModel is the CPU model the guest runs with (ActStart, ActMigrate);
	// "" or host: the driver's default.
	CPUModel string
}

func (a Action) String() string {
	switch a.Kind {
	case ActStart:
		return fmt.Sprintf("start %s on %s%s", a.Guest, a.Node, paren(a.Msg))
	case ActStop:
		f := ""
		if a.Force {
			f = " (forced)"
		}
		return fmt.Sprintf("stop %s on %s%s%s", a.Guest, a.Node, f, paren(a.Msg))
	case ActMigrate:
		return fmt.Sprintf("migrate %s from %s to %s%s", a.Guest, a.Node, a.Target, paren(a.Msg))
	case ActFence:
		return fmt.Sprintf("fence %s (attempt %d)", a.Node, a.Op)
	case ActShutdownReady:
		return fmt.Sprintf("%s is empty: its shutdown may proceed", a.Node)
	case ActPersist:
		return "persist state"
	case ActReject:
		return "rejected: " + a.Msg
	}
	return a.Msg
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

func at(t time.Time, d time.Duration) time.Time { return t.Add(d) }
