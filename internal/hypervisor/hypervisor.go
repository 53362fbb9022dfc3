// Package hypervisor defines what a host's agent needs of a hypervisor: the
// Driver interface that the libvirt and QEMU drivers (subpackages) implement.
// The agent never talks to libvirt or QEMU except through a Driver.
package hypervisor

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
)

// State is a guest's state as the hypervisor sees it.
type State string

const (
	Running  State = "running"
	Paused   State = "paused" // includes paused on I/O error
	Shutoff  State = "shutoff"
	Crashed  State = "crashed"
	Incoming State = "incoming" // waiting for an incoming migration
)

// Status is one guest as the hypervisor reports it.
type Status struct {
	Name   string    `json:"name"`
	State  State     `json:"state"`
	Reason string    `json:"reason,omitempty"` // e.g. "io-error", "shutdown from inside"
	Since  time.Time `json:"since,omitempty"`
	PID    int       `json:"pid,omitempty"`
}

// EventKind is a lifecycle change the driver reports without being asked.
type EventKind string

const (
	EventStarted  EventKind = "started"
	EventStopped  EventKind = "stopped"  // clean stop, ours or from inside the guest
	EventCrashed  EventKind = "crashed"  // the guest died unexpectedly
	EventPaused   EventKind = "paused"   // e.g. I/O error
	EventResumed  EventKind = "resumed"  // also: an incoming migration completed here
	EventMigrated EventKind = "migrated" // the guest left this host by migration
)

// Event is a lifecycle change of one guest.
type Event struct {
	Guest  string
	Kind   EventKind
	Reason string
	At     time.Time
}

// MigrationTarget says where a live migration goes. For libvirt it is the
// target's libvirt URI; for QEMU the address the target's -incoming listens on.
type MigrationTarget struct {
	Node string
	URI  string
	// TLS says the target listens with TLS (the cluster's certificates,
	// checked both ways): the source must connect with TLS and check that
	// the target's certificate names Node.
	TLS bool `json:",omitempty"`
}

// IncomingOptions are what the manager allows a migration's target.
type IncomingOptions struct {
	// TLS: the source can migrate over TLS (every host has
	// model.FeatureMigrationTLS), so the target may listen with TLS if it
	// has the credentials. Without it the target listens on plain TCP,
	// which every source speaks.
	TLS bool
}

// Progress is a live migration's progress.
type Progress struct {
	Total     int64 // bytes of guest memory
	Remaining int64
	Downtime  time.Duration // set when complete, when the hypervisor reports it
}

// Sentinel errors drivers wrap.
var (
	ErrNotFound       = errors.New("guest not found on this host")
	ErrAlreadyRunning = errors.New("guest already running on this host")
	ErrUnavailable    = errors.New("hypervisor unavailable")
)

// Driver runs guests on one host. Every method honours ctx's deadline; a
// hung hypervisor returns an error, it does not hang the caller.
type Driver interface {
	// Name is "libvirt" or "qemu".
	Name() string
	// Start defines (if needed) and boots the guest.
	Start(ctx context.Context, def guestdef.Definition) error
	// Stop asks the guest to shut down, waits up to timeout, then forces it
	// off. It returns nil once the guest no longer runs.
	Stop(ctx context.Context, name string, timeout time.Duration) error
	// Kill forces the guest off at once.
	Kill(ctx context.Context, name string) error
	// Status reports one guest; ErrNotFound when the host does not run it.
	Status(ctx context.Context, name string) (Status, error)
	// List reports every guest this driver runs here, for adoption after an
	// agent restart.
	List(ctx context.Context) ([]Status, error)
	// Events delivers lifecycle events until Close. The channel is never
	// closed before Close is called.
	Events() <-chan Event
	// PrepareIncoming readies this host to receive a live migration of def
	// and returns the target to migrate to.
	PrepareIncoming(ctx context.Context, def guestdef.Definition, opts IncomingOptions) (MigrationTarget, error)
	// Migrate live-migrates a running guest to target. On failure the guest
	// keeps running here. progress may be nil.
	Migrate(ctx context.Context, name string, target MigrationTarget, progress func(Progress)) error
	// Close releases the connection; running guests keep running.
	Close() error
}

// GuestAgent is implemented by drivers that reach a guest's qemu-guest-agent
// through the virtio-serial channel they add to guests that need it
// (guestdef.Definition.NeedsAgent).
type GuestAgent interface {
	// AgentCommand sends one guest agent command (JSON with "execute" and
	// "arguments") to a running guest and returns its "return" value. It
	// gives up when ctx ends: a hung guest never answers.
	AgentCommand(ctx context.Context, name string, cmd []byte) (json.RawMessage, error)
}

// Display is implemented by drivers that reach a guest's graphical display.
type Display interface {
	// OpenDisplay connects to the running guest's VNC server (RFB), which
	// listens only on a local unix socket.
	OpenDisplay(ctx context.Context, name string) (net.Conn, error)
}

// Console is implemented by drivers that attach to a guest's serial console.
type Console interface {
	// OpenConsole connects to the running guest's first serial port:
	// what is written goes to the guest, what the guest prints is read.
	OpenConsole(ctx context.Context, name string) (net.Conn, error)
}
