// Package manager owns the HA manager's decisions as a pure, deterministic
// state machine in the style of etcd's raft core: no goroutines, clock,
// network or disk. The caller feeds events with the current time into
// State.Step and executes the actions it returns (start, stop, migrate,
// fence, persist). The daemon and the simulator run this same code; only the
// shell around it differs.
//
// State is plain data and round-trips through encoding/json: the daemon
// persists it after every step (ActPersist) and a newly elected manager
// restores it with Restore and continues where the old one stopped. See
// docs/manager.md.
package manager

import (
	"errors"
	"time"

	"github.com/haven-ha/haven/internal/model"
)

// Timings are the manager's and the agent's time knobs. The daemon and the
// simulator use DefaultTimings unchanged.
type Timings struct {
	// LeaseTTL is how long a node's lease lives without keepalives; a node
	// fails when its lease expires. It outlives an agent restart.
	LeaseTTL time.Duration `json:"lease_ttl"`
	// Keepalive is how often an agent renews its lease.
	Keepalive time.Duration `json:"keepalive"`
	// FenceRetry is the wait between failed fence attempts.
	FenceRetry time.Duration `json:"fence_retry"`
	// WatchdogTimeout is the hardware watchdog's timeout: a node that lost
	// the cluster is powered off at most this long after its self-fence
	// deadline (its lease expiry as it sees it), even if its agent hangs.
	WatchdogTimeout time.Duration `json:"watchdog_timeout"`
	// WatchdogMargin covers the watchdog firing late (1 s) and clocks
	// running apart (1% each): in watchdog mode the manager treats a failed
	// node as fenced WatchdogWait after it saw its lease expire.
	WatchdogMargin time.Duration `json:"watchdog_margin"`
	// RestartDelay is the pause before restarting a crashed guest, or one
	// that failed to start, on the same node; it doubles with each further
	// restart since the counts were last cleared, up to 32 times.
	RestartDelay time.Duration `json:"restart_delay"`
	// Tick is the longest time between two manager steps.
	Tick time.Duration `json:"tick"`
	// StopTimeout is how long an agent waits for a graceful guest stop before
	// it forces it (agent side; the result reports the final outcome).
	StopTimeout time.Duration `json:"stop_timeout"`
}

// DefaultTimings returns the documented defaults. With them a dead node's
// guests run elsewhere about 12 s after it died (agent fencing; the daemon's
// direct heartbeats make it faster), 15 s with the watchdog; a crashed guest runs again about 2.1 s after the crash (simulated 2 s start).
func DefaultTimings() Timings {
	return Timings{
		LeaseTTL:        8 * time.Second,
		Keepalive:       1 * time.Second,
		FenceRetry:      5 * time.Second,
		WatchdogTimeout: 10 * time.Second,
		WatchdogMargin:  2 * time.Second,
		RestartDelay:    100 * time.Millisecond,
		Tick:            5 * time.Second,
		StopTimeout:     60 * time.Second,
	}
}

// WatchdogWait is how long after it saw a failed node's lease expire the
// manager waits, in watchdog mode, before the node counts as fenced: the
// node's last pet came at most one keepalive after the renewal that
// confirmed it, and the lease outlived that renewal by LeaseTTL, so the
// watchdog has fired by WatchdogTimeout + Keepalive - LeaseTTL after the
// expiry, plus the margin (docs/fencing.md has the proof;
// watchdog.Timing.Validate refuses timings for which this is too short).
func (t Timings) WatchdogWait() time.Duration {
	return max(t.WatchdogTimeout+t.Keepalive+t.WatchdogMargin-t.LeaseTTL, t.WatchdogMargin)
}

// Config is the cluster-wide policy the manager runs with.
type Config struct {
	Fencing        model.FencingMode    `json:"fencing"`
	ShutdownPolicy model.ShutdownPolicy `json:"shutdown_policy"`
	// QuorumLoss is what a node does when it loses the quorate side while
	// it runs guests (stop: self-fence; freeze: keep them, only with
	// FencingAgent). The manager's own rules are the same under both: the
	// quorate side fails and fences such a node; the policy is here so that
	// the shells (daemon, simulator) read it from one place and tell the
	// agents.
	QuorumLoss model.QuorumLossPolicy `json:"quorum_loss,omitempty"`
	// Preemption lets a guest that has no candidate node for lack of
	// memory alone stop running guests of strictly lower priority to get
	// room (see docs/manager.md).
	Preemption bool    `json:"preemption,omitempty"`
	Timings    Timings `json:"timings"`
	// Reserve is admission control (off when zero): see admission.go.
	Reserve model.Reserve `json:"reserve,omitzero"`
	// Balance is rebalancing (off when zero): see balance.go.
	Balance model.Balance `json:"balance,omitzero"`
	// Capacity: host reserves, guest overhead, vCPU counting and the CPU
	// model (all off when zero): see capacity.go.
	Capacity model.Capacity `json:"capacity,omitzero"`
}

// SelfFences reports whether a node that loses the quorate side while it
// runs guests must stop them and power itself off at its self-fence
// deadline (quorum_loss stop, or any watchdog cluster).
func (c Config) SelfFences() bool {
	return c.QuorumLoss != model.QuorumLossFreeze || c.Fencing == model.FencingWatchdog
}

// GuestState is a guest's runtime state as the manager reports it.
type GuestState string

const (
	GuestStarted    GuestState = "started"    // running, or being started, on Node
	GuestStopped    GuestState = "stopped"    // not running, recorded on Node (may be empty)
	GuestDisabled   GuestState = "disabled"   // not running, must not run
	GuestFailed     GuestState = "failed"     // gave up; still running on Node when Running is set
	GuestRecovering GuestState = "recovering" // should run, is not running, waits for a node
	GuestFencing    GuestState = "fencing"    // was running on a failed node not yet fenced
	GuestFrozen     GuestState = "frozen"     // stopped by a freeze shutdown, starts on Node when it is back
)

// NodeStatus is the manager's view of a node's membership.
type NodeStatus string

const (
	NodeOnline  NodeStatus = "online"  // live lease
	NodeOffline NodeStatus = "offline" // never seen, or down with nothing to fence
	NodeFailed  NodeStatus = "failed"  // lease expired with guests on it: being fenced
	NodeFenced  NodeStatus = "fenced"  // fenced, not back yet
	NodeGone    NodeStatus = "left"    // left cleanly after a graceful shutdown
)

// Shutdown is a graceful host shutdown or reboot in progress (or, once the
// node has left, remembered until it comes back).
type Shutdown struct {
	Policy model.ShutdownPolicy `json:"policy"`
	Reboot bool                 `json:"reboot"`
	Ready  bool                 `json:"ready"` // ActShutdownReady was sent
}

// Fence is a pending fence of a failed node.
type Fence struct {
	Attempt  uint64    `json:"attempt"`   // id of the attempt in flight (agent mode)
	InFlight bool      `json:"in_flight"` // an attempt was sent and has no result yet
	RetryAt  time.Time `json:"retry_at"`  // next attempt no earlier than this
	// DeadlineAt is when, in watchdog mode, the node counts as fenced.
	DeadlineAt time.Time `json:"deadline_at"`
	// Rejoin holds the report of a node that came back while an attempt was
	// in flight: it is taken as online only if that attempt fails (a fence
	// cannot be called back).
	Rejoin *NodeReport `json:"rejoin,omitempty"`
}

// Node is the manager's record of one configured node.
type Node struct {
	Name        string     `json:"name"`
	Memory      int64      `json:"memory"`
	CPUs        int        `json:"cpus"`
	Status      NodeStatus `json:"status"`
	Maintenance bool       `json:"maintenance,omitempty"`
	// Witness: the node votes for quorum and takes part in no placement:
	// nothing is ever placed, started, migrated or failed back onto it, a
	// command naming it as a target is rejected, and it is never fenced.
	Witness  bool      `json:"witness,omitempty"`
	Shutdown *Shutdown `json:"shutdown,omitempty"`
	Fence    *Fence    `json:"fence,omitempty"`
	BootID   string    `json:"boot_id,omitempty"`
	DownAt   time.Time `json:"down_at"`
	// Fences counts fences that succeeded (not the operator's confirmations
	// that the node is off).
	Fences int `json:"fences"`
	// CPUModels are the CPU models the host last reported it offers
	// (empty: unknown, not checked).
	CPUModels []string `json:"cpu_models,omitempty"`
	// MissingPools are storage pools not usable on the node (its agent's
	// last check); guests on them are not placed there.
	MissingPools []string `json:"missing_pools,omitempty"`
}

// Reported is the node state reported to operators: maintenance while the
// flag is set, online with a live lease, offline otherwise.
func (n *Node) Reported() string {
	switch {
	case n.Maintenance:
		return "maintenance"
	case n.Status == NodeOnline:
		return "online"
	}
	return "offline"
}

// OpKind is the kind of an operation in flight on a guest.
type OpKind string

const (
	OpStart   OpKind = "start"
	OpStop    OpKind = "stop"
	OpMigrate OpKind = "migrate"
)

// Purpose says why the manager started an operation; it decides what
// happens when the result comes back.
type Purpose string

const (
	PurposePlace    Purpose = "place"    // initial placement, recovery after a node failure, operator start
	PurposeRestart  Purpose = "restart"  // restart on the same node after a crash or failed start
	PurposeMove     Purpose = "move"     // move after crashes or failed starts (counts against max_relocations)
	PurposeEvacuate Purpose = "evacuate" // away from a node in maintenance or shutting down
	PurposeReturn   Purpose = "return"   // back to the node a maintenance or shutdown moved it from
	PurposeFailback Purpose = "failback" // to a more preferred node
	PurposeOperator Purpose = "operator" // operator migrate, relocate, stop, disable
	PurposeDesired  Purpose = "desired"  // stop because the desired state is not started
	PurposeShutdown Purpose = "shutdown" // stop for a shutdown with policy stop
	PurposeFreeze   Purpose = "freeze"   // stop for a shutdown with policy freeze
	PurposeUnfreeze Purpose = "unfreeze" // start of a frozen guest on its node
	PurposePreempt  Purpose = "preempt"  // stop to make room for a guest of higher priority
	PurposeBalance  Purpose = "balance"  // live migration that evens out memory use
)

// Op is an operation in flight on a guest.
type Op struct {
	ID     uint64 `json:"id"`
	Kind   OpKind `json:"kind"`
	Node   string `json:"node"`             // where it acts (the source of a migration)
	Target string `json:"target,omitempty"` // migration target, or where to start after this stop (relocation)
	From   string `json:"from,omitempty"`   // for the start of a relocation: the node it was stopped on
	// TargetBoot is the target's boot id when a migration was sent, to
	// recognise a result that arrives after the target failed or rebooted.
	TargetBoot string `json:"target_boot,omitempty"`
	// TargetCrashed: the target reported the guest crashed before the
	// source reported the migration's result.
	TargetCrashed bool    `json:"target_crashed,omitempty"`
	Purpose       Purpose `json:"purpose"`
	Force         bool    `json:"force,omitempty"`
}

// Need says how a recovering guest is to be placed.
type Need string

const (
	NeedPlace   Need = "place"   // placement, no budget
	NeedRestart Need = "restart" // back on Node
	NeedMove    Need = "move"    // placement away from the tried nodes, counts a move
	NeedNode    Need = "node"    // start on Node if it can take it, else placement (operator start)
)

// Guest is the manager's record of one guest.
type Guest struct {
	Spec  model.GuestSpec `json:"spec"`
	State GuestState      `json:"state"`
	// Node is where it runs or is assigned, or the node it was last on.
	Node    string `json:"node,omitempty"`
	Running bool   `json:"running,omitempty"` // a copy runs on Node as far as the manager knows
	Op      *Op    `json:"op,omitempty"`
	// AlsoOn is a failed node that may hold the guest too: the target of a
	// live migration that was in flight when its source or its target
	// failed. A fencing guest is recovered only once both Node and AlsoOn
	// are fenced (or back without it).
	AlsoOn  string    `json:"also_on,omitempty"`
	Need    Need      `json:"need,omitempty"` // for recovering guests
	RetryAt time.Time `json:"retry_at"`       // a recovering guest waits until then

	Restarts     int       `json:"restarts"`
	Moves        int       `json:"moves"`
	Tried        []string  `json:"tried,omitempty"`
	RunningSince time.Time `json:"running_since"`

	// EvacuatedFrom is the node whose maintenance or shutdown moved it away.
	EvacuatedFrom string `json:"evacuated_from,omitempty"`
	// ReturnTo asks for a move back to this node in the next step.
	ReturnTo string `json:"return_to,omitempty"`
	// OperatorPlaced: an operator put it where it is; no failback until the
	// manager next moves it.
	OperatorPlaced bool `json:"operator_placed,omitempty"`
	// FailbackBlocked: a failback migration failed; retried once a node comes
	// up or leaves maintenance.
	FailbackBlocked bool   `json:"failback_blocked,omitempty"`
	BlockedSeq      uint64 `json:"blocked_seq,omitempty"` // State.UpSeq when it was blocked
	// MoveFailedAt is when its last migration failed, kept until the
	// manager may migrate it again (MoveRetryAt; zero once that moment is
	// reached). MoveFails counts its migrations that failed in a row; a
	// migration that succeeds, a start and a stop set it to zero.
	MoveFailedAt time.Time `json:"move_failed_at"`
	MoveFails    int       `json:"move_fails,omitempty"`
	// PreemptOn is the node where guests of lower priority are being
	// stopped to make room for this recovering guest; it starts there once
	// PreemptVictims have stopped (its memory is reserved there meanwhile).
	PreemptOn      string   `json:"preempt_on,omitempty"`
	PreemptVictims []string `json:"preempt_victims,omitempty"`
	// PreemptedBy names the guest a preemption stop of this guest makes
	// room for (set while that stop is in flight).
	PreemptedBy string `json:"preempted_by,omitempty"`
	// Preempted: it was stopped by a preemption and has not run since; it
	// waits for room and never preempts others itself. Cleared when it
	// runs again and by an operator's stop or disable (a start of a
	// recovering guest only clears its counts).
	Preempted bool `json:"preempted,omitempty"`
	// Wait says why a guest that should run is not running or not being
	// started (a dependency, no node can take it, a rule), for operators.
	Wait string `json:"wait,omitempty"`
	// BalancedAt is when rebalancing last moved it (cool-down).
	BalancedAt time.Time `json:"balanced_at,omitzero"`
	// CPUModel is the CPU model it was last started with ("" or host: none);
	// a live migration keeps it, so a target must offer it.
	CPUModel string `json:"cpu_model,omitempty"`
}

// Sentinel errors for operator commands that cannot be carried out. Validate
// and Step wrap them with the guest and node names.
var (
	ErrUnknownGuest     = errors.New("no such guest")
	ErrUnknownNode      = errors.New("no such node")
	ErrNotMigratable    = errors.New("guest is not migratable; use relocate")
	ErrNotRunning       = errors.New("guest is not running")
	ErrBusy             = errors.New("guest has an operation in progress; retry when it ends")
	ErrNodeOffline      = errors.New("node is offline")
	ErrNodeMaintenance  = errors.New("node is in maintenance")
	ErrNodeShuttingDown = errors.New("node is shutting down")
	ErrOutsideDomain    = errors.New("node is outside the guest's restricted failover domain")
	ErrNoRoom           = errors.New("not enough free memory on node")
	ErrPoolMissing      = errors.New("a storage pool the guest needs is not usable on node")
	ErrPinned           = errors.New("the guest's disks are not on shared storage: it runs only on its own node")
	ErrSameNode         = errors.New("guest is already on that node")
	ErrWitness          = errors.New("node is a witness: it never runs guests")
	ErrFencing          = errors.New("guest waits for its failed node to be fenced")
	ErrInMaintenance    = errors.New("node is already in maintenance")
	ErrNotInMaintenance = errors.New("node is not in maintenance")
	ErrNotFailed        = errors.New("node is not a failed node waiting for its fence: only such a node can be confirmed off")
	ErrUnknownCommand   = errors.New("unknown command")
	ErrAdmission        = errors.New("admission control: the cluster could no longer restart every protected guest after the failures it reserves for")
)
