// Package model holds the cluster's shared vocabulary: the declarative specs an
// operator writes (guests, failover domains) and the facts a host reports. The
// manager core, the store, the API and the simulator all speak these types, so
// they carry stable JSON names and no behaviour beyond validation.
package model

import "time"

// Sizes are in bytes.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
	TiB int64 = 1 << 40
)

// DesiredState is what the operator wants of a guest.
type DesiredState string

const (
	DesiredStarted  DesiredState = "started"
	DesiredStopped  DesiredState = "stopped"
	DesiredDisabled DesiredState = "disabled"
)

// Recovery is what the manager does after a guest crashes or fails to start on
// a healthy node.
type Recovery string

const (
	RecoveryRestart  Recovery = "restart"
	RecoveryRelocate Recovery = "relocate"
	RecoveryDisable  Recovery = "disable"
)

// FencingMode says how a failed node is made safe before its guests run
// elsewhere.
type FencingMode string

const (
	FencingAgent    FencingMode = "agent"    // fence devices driven by the manager
	FencingWatchdog FencingMode = "watchdog" // nodes self-fence; the manager waits out the deadline
)

// ShutdownPolicy says what happens to a node's guests on a graceful host
// shutdown or reboot.
type ShutdownPolicy string

const (
	ShutdownMigrate ShutdownPolicy = "migrate"
	ShutdownStop    ShutdownPolicy = "stop"
	ShutdownFreeze  ShutdownPolicy = "freeze"
)

// QuorumLossPolicy says what a node does when it loses the quorate side
// while it runs guests.
type QuorumLossPolicy string

const (
	// QuorumLossStop: it stops its guests and powers itself off at its
	// self-fence deadline (the default; the only choice without fence
	// devices).
	QuorumLossStop QuorumLossPolicy = "stop"
	// QuorumLossFreeze: it keeps its guests running, never self-fences and
	// starts, stops or moves nothing until it is in a quorate side again;
	// the quorate side fences it with its device. Only with FencingAgent.
	QuorumLossFreeze QuorumLossPolicy = "freeze"
)

// MaxPriority bounds a guest's priority (0..MaxPriority).
const MaxPriority = 1000

// NodeFacts is what a host's agent reports about itself, stored under its
// lease so it disappears when the host does.
type NodeFacts struct {
	Name   string `json:"name"`
	Memory int64  `json:"memory"` // bytes available to guests
	CPUs   int    `json:"cpus"`
	// CPUModels are the CPU models this host can offer its guests (the
	// x86-64 levels of model.CPULevels its CPU supports); empty: unknown.
	CPUModels    []string `json:"cpu_models,omitempty"`
	Hypervisor   string   `json:"hypervisor"` // "qemu", "libvirt", "sim"
	AgentVersion string   `json:"agent_version"`
	// FeatureLevel is the newest cluster feature the agent's build has
	// (FeatureLevel; 0 from agents older than feature levels).
	FeatureLevel int    `json:"feature_level,omitempty"`
	BootID       string `json:"boot_id"`
	APIAddr      string `json:"api_addr"`  // https://host:port
	PeerAddr     string `json:"peer_addr"` // store peer URL, when a store member
	StoreMember  bool   `json:"store_member"`
	// Witness: the host votes for quorum and never runs guests.
	Witness bool `json:"witness,omitempty"`
	// HeartbeatAddr is where the agent receives direct heartbeats (UDP
	// host:port; empty: it sends none, the lease alone tells its death).
	HeartbeatAddr string    `json:"heartbeat_addr,omitempty"`
	Since         time.Time `json:"since"` // when this agent came up
}

// DomainMember is one node of a failover domain with its priority; higher is
// more preferred.
type DomainMember struct {
	Node     string `json:"node"`
	Priority int    `json:"priority"`
}

// Domain is a failover domain: the nodes a guest prefers, in tiers.
type Domain struct {
	Name       string         `json:"name"`
	Members    []DomainMember `json:"members"`
	Ordered    bool           `json:"ordered"`    // members are tiers in list order, first most preferred
	Restricted bool           `json:"restricted"` // never run outside the members
	NoFailback bool           `json:"nofailback"` // never move back to a more preferred node by itself
}

// GuestSpec is the cluster-level policy of a guest: what the manager needs to
// decide where and whether it runs. The hypervisor definition (disks, network,
// boot) lives beside it in package guestdef.
type GuestSpec struct {
	Name           string        `json:"name"`
	Memory         int64         `json:"memory"` // bytes
	CPUs           int           `json:"cpus"`
	State          DesiredState  `json:"state"`
	Domain         string        `json:"domain,omitempty"`
	Recovery       Recovery      `json:"recovery"`
	MaxRestarts    int           `json:"max_restarts"`
	RestartWindow  time.Duration `json:"restart_window"`
	MaxRelocations int           `json:"max_relocations"`
	Migratable     bool          `json:"migratable"`
	// Priority (0..MaxPriority, default 0) orders placement when several
	// guests need a node at once (highest first) and, with preemption on,
	// lets a guest stop guests of strictly lower priority to get room.
	Priority int `json:"priority,omitempty"`
	// Pools are the storage pools the guest's disks are on: a host that
	// does not have all of them usable cannot run it.
	Pools []string `json:"pools,omitempty"`
	// Pinned: some disk is not on shared storage, so the guest can run only
	// on its node: it is never moved, and after that node fails it waits for
	// it to come back.
	Pinned bool `json:"pinned,omitempty"`
	// After are the guests that must run before this one starts (start
	// order); it is stopped before them (see docs/manager.md).
	After []string `json:"after,omitempty"`
	// Node is where the operator or the manager last put the guest; empty
	// until it is placed.
	Node string `json:"node,omitempty"`
	// Tags are free labels an operator selects guests by (guest list
	// --tag, bulk actions); the manager ignores them. At most MaxTags,
	// each a name (see cluster.ValidTag).
	Tags []string `json:"tags,omitempty"`
	// CPUModel overrides the cluster's CPU model for this guest: a model
	// name (e.g. x86-64-v3) or host; empty: the cluster's.
	CPUModel string `json:"cpu_model,omitempty"`
}

// MaxTags bounds the tags of one guest; MaxTagLen bounds each tag.
const (
	MaxTags   = 16
	MaxTagLen = 32
)

// DefaultGuestSpec returns a spec with the documented defaults filled in.
func DefaultGuestSpec(name string) GuestSpec {
	return GuestSpec{
		Name:           name,
		Memory:         1 * GiB,
		CPUs:           1,
		State:          DesiredStarted,
		Recovery:       RecoveryRestart,
		MaxRestarts:    1,
		RestartWindow:  10 * time.Minute,
		MaxRelocations: 1,
		Migratable:     true,
	}
}
