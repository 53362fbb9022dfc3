package hostctl

// Intake is what a host does with an order it finds in the store, before
// carrying it out. The daemon's host agent and the simulator's agents both
// decide with Admit, so that the simulator's timelines show the host's own
// rules.
type Intake int

const (
	// Take: carry it out.
	Take Intake = iota
	// EarlierLife: the order was written (at store revision rev) no later
	// than this host's current life in the cluster began (since): the
	// manager wrote it for an earlier life, which ended when the host went
	// down (powered off, fenced, or its lease lost), and gave up its
	// operations here then; the guest of a start order it never received
	// may run elsewhere by now. Orders stay in the store until replaced,
	// so a host that comes back finds them: it does not carry them out.
	EarlierLife
	// Repeated: the order is the last one this host took for its guest (a
	// new manager writing again what the last one wrote, a watch replayed
	// after an agent restart): carried out once only.
	Repeated
)

// Admit decides about order o, written at store revision rev, on a host
// whose current life began at revision since and whose last order taken
// for o's guest is lastID.
func Admit(o Order, rev, since int64, lastID string) Intake {
	switch {
	case rev <= since:
		return EarlierLife
	case o.ID == lastID:
		return Repeated
	}
	return Take
}
