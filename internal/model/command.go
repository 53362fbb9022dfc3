package model

// CommandKind is an operator command.
type CommandKind string

const (
	CmdStart          CommandKind = "start"
	CmdStop           CommandKind = "stop"
	CmdDisable        CommandKind = "disable"
	CmdMigrate        CommandKind = "migrate"
	CmdRelocate       CommandKind = "relocate"
	CmdMaintenanceOn  CommandKind = "maintenance-on"
	CmdMaintenanceOff CommandKind = "maintenance-off"
	// CmdConfirmOff is the operator's word that a failed node is off (its
	// plug pulled, seen dark): its guests recover without waiting for its
	// fence devices, as fence_ack_manual did for RHCS and stonith_admin
	// --confirm does for Pacemaker. Only a failed node waiting for its fence
	// can be confirmed.
	CmdConfirmOff CommandKind = "confirm-off"
)

// Command is an operator command: what the API queues in the store and
// the manager carries out (manager.Command is the same as an event of the
// core). Guest is set for guest commands, Node for migrate, relocate and
// maintenance.
type Command struct {
	Kind  CommandKind
	Guest string
	Node  string
}

func (c Command) String() string {
	switch c.Kind {
	case CmdMaintenanceOn:
		return "maintenance " + c.Node + " on"
	case CmdMaintenanceOff:
		return "maintenance " + c.Node + " off"
	case CmdConfirmOff:
		return "confirm off " + c.Node
	case CmdMigrate, CmdRelocate:
		return string(c.Kind) + " " + c.Guest + " " + c.Node
	}
	return string(c.Kind) + " " + c.Guest
}
