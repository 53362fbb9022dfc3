package manager

import (
	"fmt"
	"time"

	"github.com/haven-ha/haven/internal/model"
)

// Validate reports whether an operator command can be carried out now, with
// a reason wrapping one of the Err sentinels when it cannot. The API calls it
// to answer synchronously; Step applies the same check.
func Validate(s *State, c Command) error { return s.Validate(c) }

// Validate is the method form of Validate.
func (s *State) Validate(c Command) error {
	switch c.Kind {
	case CmdMaintenanceOn, CmdMaintenanceOff:
		n := s.node(c.Node)
		if n == nil {
			return fmt.Errorf("%s: node %q: %w", c, c.Node, ErrUnknownNode)
		}
		if c.Kind == CmdMaintenanceOn && n.Maintenance {
			return fmt.Errorf("%s: %w", c, ErrInMaintenance)
		}
		if c.Kind == CmdMaintenanceOff && !n.Maintenance {
			return fmt.Errorf("%s: %w", c, ErrNotInMaintenance)
		}
		return nil
	case CmdConfirmOff:
		n := s.node(c.Node)
		switch {
		case n == nil:
			return fmt.Errorf("%s: node %q: %w", c, c.Node, ErrUnknownNode)
		case n.Status != NodeFailed:
			return fmt.Errorf("%s: it is %s: %w", c, n.Status, ErrNotFailed)
		case n.Fence != nil && n.Fence.Rejoin != nil:
			return fmt.Errorf("%s: it reported in again while being fenced: %w", c, ErrNotFailed)
		}
		return nil
	case CmdStart, CmdStop, CmdDisable, CmdMigrate, CmdRelocate:
	default:
		return fmt.Errorf("command %q: %w", c.Kind, ErrUnknownCommand)
	}
	g := s.Guest(c.Guest)
	if g == nil {
		return fmt.Errorf("%s guest %q: %w", c.Kind, c.Guest, ErrUnknownGuest)
	}
	if c.Kind == CmdStart && !g.Protected() {
		if err := s.Admit(g.Spec); err != nil {
			return fmt.Errorf("start %w", err)
		}
	}
	if c.Kind != CmdMigrate && c.Kind != CmdRelocate {
		return nil
	}
	wrap := func(err error) error {
		return fmt.Errorf("%s guest %q to node %q: %w", c.Kind, c.Guest, c.Node, err)
	}
	if s.node(c.Node) == nil {
		return wrap(ErrUnknownNode)
	}
	if c.Kind == CmdMigrate {
		if !g.Spec.Migratable {
			return wrap(ErrNotMigratable)
		}
		if !g.Running || g.State != GuestStarted {
			return wrap(ErrNotRunning)
		}
	}
	if g.State == GuestFencing {
		return wrap(ErrFencing)
	}
	if g.Op != nil {
		return wrap(ErrBusy)
	}
	if g.Node == c.Node {
		return wrap(ErrSameNode)
	}
	if err := s.canTake(g, c.Node); err != nil {
		return wrap(err)
	}
	return nil
}

// canTake reports why node cannot take guest g now, or nil.
func (s *State) canTake(g *Guest, node string) error {
	n := s.node(node)
	switch {
	case n == nil:
		return ErrUnknownNode
	case n.Witness:
		return ErrWitness
	case n.Status != NodeOnline:
		return ErrNodeOffline
	case n.Maintenance:
		return ErrNodeMaintenance
	case n.Shutdown != nil:
		return ErrNodeShuttingDown
	case !s.allowed(g, node):
		return ErrOutsideDomain
	case !s.hasPools(g, n):
		return ErrPoolMissing
	case g.Spec.Pinned && g.Node != "" && node != g.Node:
		return ErrPinned
	}
	if !offers(n, s.CPUModel(g)) {
		return ErrCPUModel
	}
	i := s.nodeIdx[node]
	used := make([]int64, len(s.Nodes))
	cpus := make([]int64, len(s.Nodes))
	s.count(used, make([]int, len(s.Nodes)), cpus)
	if used[i]+s.guestMem(g) > s.nodeMem(n) {
		return ErrNoRoom
	}
	if c := s.guestCPUs(g); c > 0 && cpus[i]+c > s.nodeCPUs(n) {
		return ErrNoCPU
	}
	return nil
}

func (st *stepper) command(c Command) {
	s := st.s
	if err := s.Validate(c); err != nil {
		st.acts = append(st.acts, Action{Kind: ActReject, Guest: c.Guest, Node: c.Node, Msg: err.Error(), Err: err})
		return
	}
	switch c.Kind {
	case CmdMaintenanceOn:
		s.node(c.Node).Maintenance = true
		st.logf("node %s is in maintenance", c.Node)
		return
	case CmdMaintenanceOff:
		n := s.node(c.Node)
		n.Maintenance = false
		st.logf("node %s is out of maintenance", c.Node)
		if n.Status == NodeOnline {
			st.markReturns(c.Node)
		} else {
			for _, g := range s.Guests {
				if g.EvacuatedFrom == c.Node {
					g.EvacuatedFrom = ""
				}
			}
		}
		s.UpSeq++ // failed failbacks may be tried again
		return
	case CmdConfirmOff:
		// A fence attempt in flight is forgotten: its result no longer
		// matches a failed node.
		st.logf("operator confirms node %s is off; its guests recover without its fence", c.Node)
		st.fenced(s.node(c.Node), false)
		return
	}
	g := s.Guest(c.Guest)
	switch c.Kind {
	case CmdStart:
		g.Spec.State = model.DesiredStarted
		g.Restarts, g.Moves, g.Tried = 0, 0, nil
		switch g.State {
		case GuestRecovering:
			if g.Need == NeedMove || g.Need == NeedRestart {
				g.Need = NeedNode // a fresh start: no tried nodes left
				g.RetryAt = time.Time{}
			}
		case GuestStopped, GuestDisabled, GuestFailed:
			if g.Running {
				g.State = GuestStarted
			} else if g.Op == nil {
				g.State = GuestRecovering
				g.Need = NeedNode
				g.RetryAt = st.now
			}
		}
	case CmdStop, CmdDisable:
		g.Preempted = false // a later start is a fresh one
		if c.Kind == CmdDisable {
			g.Spec.State = model.DesiredDisabled
			g.Restarts, g.Moves, g.Tried = 0, 0, nil
		} else {
			g.Spec.State = model.DesiredStopped
		}
		switch {
		case g.Running && g.Op == nil && g.State != GuestFailed && s.dependentRuns(g, "") != nil:
			st.logf("%s stops once %s has stopped (start order)", g.Spec.Name, s.dependentRuns(g, "").Spec.Name)
		case g.Running && g.Op == nil:
			st.stop(g, PurposeOperator, "", g.State == GuestFailed)
		case !g.Running && g.Op == nil && g.State != GuestFencing:
			st.settleDesired(g)
		}
	case CmdMigrate:
		st.move(g, c.Node, PurposeOperator)
	case CmdRelocate:
		if g.Running {
			st.stop(g, PurposeOperator, c.Node, g.State == GuestFailed)
			return
		}
		g.Node = c.Node
		if g.State == GuestRecovering {
			g.Need = NeedNode
		}
		st.logf("%s is now recorded on %s", g.Spec.Name, c.Node)
	}
}
