package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store"
)

func init() {
	Register(&Command{
		Path:  "status",
		Short: "show the cluster: manager, quorum, hosts online, offline or in maintenance",
		Example: `haven status
haven status -o json
haven status --server https://10.0.0.1:7400,https://10.0.0.2:7400`,
		Flags: statusFlags,
	})
}

func statusFlags(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	return func(ctx context.Context, env *Env, args []string) error {
		c, err := cf.connect(env, args, 0, "")
		if err != nil {
			return err
		}
		defer c.Close()
		return runStatus(ctx, env, cf, c)
	}
}

func runStatus(ctx context.Context, env *Env, cf *clientFlags, c *client.Client) error {
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, st)
	}
	mgr := managerLine(st)
	fmt.Fprintf(env.Stdout, "Cluster %s (id %s)\n", st.Cluster, st.ClusterID)
	fmt.Fprintf(env.Stdout, "Manager: %s\n", mgr)
	q, warning := quorumLines(st)
	fmt.Fprintf(env.Stdout, "Quorum:  %s\n", q)
	if warning != "" {
		fmt.Fprintf(env.Stdout, "WARNING: %s\n", warning)
	}
	fmt.Fprintln(env.Stdout)
	tw := newTable(env.Stdout, "HOST", "STATE", "SINCE", "HA", "STORE", "ROLE", "API")
	for _, h := range st.Hosts {
		role := ""
		if h.Manager {
			role = "manager"
		}
		storeRole := h.StoreRole
		if storeRole == "" {
			storeRole = "client"
		}
		tw.row(h.Name, hostState(h), fmtTime(h.Since), h.HA, storeRole, role, h.APIAddr)
	}
	if err := tw.flush(); err != nil {
		return err
	}
	if line := versionsLine(st.Hosts); line != "" {
		fmt.Fprintf(env.Stdout, "\n%s\n", line)
	}
	if line := featuresLine(st.Features); line != "" {
		fmt.Fprintf(env.Stdout, "%s\n", line)
	}
	if line := fenceFormLine(st.FenceForm); line != "" {
		fmt.Fprintf(env.Stdout, "%s\n", line)
	}
	if st.Guests != nil {
		fmt.Fprintf(env.Stdout, "\nGuests: %d\n", st.Guests.Total)
	}
	return nil
}

// versionsLine says which Haven versions the online hosts' agents run when
// they differ (a rolling upgrade in progress), else "".
func versionsLine(hosts []api.Host) string {
	on := map[string][]string{}
	for _, h := range hosts {
		if h.Facts != nil && h.Facts.AgentVersion != "" {
			on[h.Facts.AgentVersion] = append(on[h.Facts.AgentVersion], h.Name)
		}
	}
	if len(on) < 2 {
		return ""
	}
	vs := make([]string, 0, len(on))
	for v := range on {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	parts := make([]string, 0, len(vs))
	for _, v := range vs {
		parts = append(parts, v+" on "+strings.Join(on[v], ", "))
	}
	return "Versions: MIXED (upgrade in progress): " + strings.Join(parts, "; ")
}

// featuresLine says what the cluster's feature level is, and which
// features wait for which hosts (docs/operations.md, upgrades); "" when the
// answering agent is older than feature levels.
func featuresLine(f *model.Features) string {
	if f == nil {
		return ""
	}
	if len(f.Waiting) == 0 {
		return fmt.Sprintf("Features: level %d on every host", f.Level)
	}
	return fmt.Sprintf("Features: level %d; waiting for %s to upgrade: %s", f.Level, strings.Join(f.Behind, ", "), strings.Join(f.Waiting, ", "))
}

// fenceFormLine warns while the fence configuration is stored in the
// clear for hosts that may run an older release (docs/security.md), or
// will be as soon as one is set; "" otherwise.
func fenceFormLine(f *store.FenceForm) string {
	if f == nil || len(f.OldHosts) == 0 {
		return ""
	}
	are, them := "are stored", "it"
	if !f.Clear {
		are = "would be stored (once set)"
	}
	if len(f.OldHosts) > 1 {
		them = "them"
	}
	return fmt.Sprintf("WARNING: fence passwords %s unsealed, readable by whoever reads the store, while %s may run a release that cannot open sealed secrets: upgrade or remove %s (docs/security.md)", are, strings.Join(f.OldHosts, ", "), them)
}

type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, cols ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(cols...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// managerLine says who manages the cluster, and says so when nobody does
// or when the manager's host does not answer.
func managerLine(st *api.Status) string {
	switch {
	case st.Manager == "":
		return "none (election in progress)"
	case st.ManagerUnreachable:
		return st.Manager + " UNREACHABLE: its host does not answer; another host takes over once it is seen dead (about 1.5 s) or its lease expires (election pending)"
	}
	mgr := st.Manager
	if !st.ManagerSince.IsZero() {
		mgr += " since " + fmtTime(st.ManagerSince)
	}
	if st.Hold {
		mgr += ", ON HOLD: takes no action (no fence, start, stop or move) until `haven policy set --hold off`"
	}
	return mgr
}

// hostState is a host's state as status and node list show it:
// online, offline or unknown, "unreachable" when its lease still runs
// but it does not answer, ", isolated" when it is cut off but alive on the
// shared storage, and ", maintenance" when in maintenance.
func hostState(h api.Host) string {
	state := h.State
	if h.Unreachable {
		state = "unreachable"
	}
	if h.Isolated {
		state += ", isolated (alive on the shared storage, cut off from the network)"
	}
	if h.Maintenance {
		state += ", maintenance"
	}
	return state
}

// quorumLines is status's quorum line and, when the store did not answer,
// the warning that says what the table then shows. Enough voters answer
// but the store did not: it has no leader for the moment (an election,
// right after its leader's host died), which is not a lost quorum.
func quorumLines(st *api.Status) (line, warning string) {
	storeKind := "embedded store, roles off"
	switch {
	case st.Store.External:
		storeKind = "external store"
	case st.Store.Roles:
		storeKind = "embedded store, roles enforced"
	}
	q := st.Quorum
	state := "OK"
	switch {
	case q.OK:
	case q.Online >= q.Needed && q.Needed > 0:
		state = "NO LEADER"
	default:
		state = "LOST"
	}
	line = fmt.Sprintf("%s (%s, %d of %d voters online, %d needed)", state, storeKind, q.Online, q.Voters, q.Needed)
	if st.Stale {
		why := "the store has no quorum"
		if state == "NO LEADER" {
			why = "the store did not answer: its voters answer but have no leader yet (an election, usually a second or two)"
		}
		warning = fmt.Sprintf("%s; this is what %s last knew, and other hosts' states are unknown", why, st.Node)
	}
	return line, warning
}
