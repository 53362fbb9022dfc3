package failover

import (
	"context"
	"flag"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/store"
)

// previous is the release TestRollingUpgrade upgrades from. There is no
// release tag yet: 235b719 is the last commit before the stored schema
// versions, the incremental manager state (savedstate format 2), direct
// heartbeats and migration over TLS, so its agents differ from the current
// ones in each of them.
var previous = flag.String("failover.previous", "235b719", "the git commit (or tag) of the previous release TestRollingUpgrade upgrades from and downgrades to")

// prevBin is the previous release's haven binary (buildPrevious).
var prevBin string

// buildPrevious builds the haven binary of the commit -failover.previous
// from this repository's history: the commit's tree (git archive, which
// leaves the repository and its worktrees alone) into a temporary dir, then
// go build there. Its modules come from the module cache or the Go proxy.
func buildPrevious(t *testing.T) string {
	t.Helper()
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("the previous release is built from git history, and this is no git checkout: %v", err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("git", "-C", strings.TrimSpace(string(root)), "cat-file", "-e", *previous+"^{commit}").Run(); err != nil {
		if shallow, _ := exec.Command("git", "-C", strings.TrimSpace(string(root)), "rev-parse", "--is-shallow-repository").Output(); strings.TrimSpace(string(shallow)) == "true" {
			t.Skipf("SKIPPED: the previous release %s is not in this shallow clone's history (scripts/test.sh tries git fetch --unshallow); clone with history to run the rolling upgrade", *previous)
		}
		t.Fatalf("the previous release %s is not in this repository's history: %v", *previous, err)
	}
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", strings.TrimSpace(string(root)), *previous, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("extract the previous release %s (a shallow clone lacks it: fetch the history): %v\n%s", *previous, err, out)
	}
	bin := filepath.Join(dir, "haven-prev")
	build := exec.Command("go", "build", "-o", bin, "./cmd/haven")
	build.Dir = src
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the previous release %s: %v\n%s", *previous, err, out)
	}
	t.Logf("previous release %s built in %v", *previous, time.Since(start).Round(100*time.Millisecond))
	return bin
}

// setPrev says whether n's agent runs the previous release from its next
// start on.
func (n *node) setPrev(prev bool) {
	n.mu.Lock()
	n.prev = prev
	n.mu.Unlock()
}

// qemuPIDs maps each guest to the PID of its one QEMU process (0 when it
// has none or several).
func (c *testCluster) qemuPIDs() map[string]int {
	m := map[string]int{}
	for _, g := range c.guests {
		if p := c.qemuProcs(g); len(p) == 1 {
			m[g] = p[0].pid
		} else {
			m[g] = 0
		}
	}
	return m
}

// versions maps each online host to its agent's version.
func versions(st *api.Status) map[string]string {
	m := map[string]string{}
	for _, h := range st.Hosts {
		if h.Facts != nil {
			m[h.Name] = h.Facts.AgentVersion
		}
	}
	return m
}

// TestRollingUpgrade starts a cluster of the previous release with a guest
// on every host, then upgrades it host by host to the current build, the
// manager's host last: each agent is stopped with SIGTERM and the current
// binary started on the same data dir. Every guest keeps its QEMU process
// (no restart), no host goes down or is fenced, and the manager moves once,
// to a current agent that continues the old manager's state (savedstate
// reads format 1). Then one host goes back to the previous release: it
// works as a member (guests kept, nothing fenced), status shows the mixed
// versions and the cluster's feature level drops, and its guest still
// migrates live to a current host, because the current target no longer
// listens with TLS, which the old source does not speak (the feature gate,
// docs/operations.md). Then the downgraded host becomes manager (the
// current managers' agents restart until it is: it continues the state
// the current manager kept in format 1) and moves that guest on to the
// third host, which it saves in format 1 only. Then that third host loses
// power: the previous release's manager fences it (current agents keep
// the fence configuration in the clear while a host of the previous
// release is registered, store/oldreleases.go, and status says so), and
// its guests start again elsewhere only after the fence. Upgraded again,
// the next manager, a current agent, continues that state (savedstate
// reads the format written last): the guests stay where the old manager
// put them, nothing restarts, nothing is fenced, and the fence
// configuration is sealed again.
func TestRollingUpgrade(t *testing.T) {
	prevBin = buildPrevious(t)
	// A lease TTL above the default's 8 s: the test restarts agents about
	// ten times, and the previous release's manager takes an agent whose
	// restart outlasts its lease for failed (no direct heartbeats): at
	// load 37 a 9 s restart was fenced. Twice the longest restart seen.
	c := newCluster(t, options{previous: true, leaseTTL: upgradeLeaseTTL})
	for _, n := range c.nodes {
		c.guest("g"+strings.TrimPrefix(n.name, "h"), "", n.name)
	}
	home := func(g, n string) bool { return n == "h"+strings.TrimPrefix(g, "g") }
	t0 := time.Now()
	c.waitRunning(120*time.Second, home)
	for _, g := range c.guests {
		c.waitStamp(g, t0, 60*time.Second)
	}
	pids := c.qemuPIDs()
	boots := map[string]int{}
	for _, g := range c.guests {
		if pids[g] == 0 {
			t.Fatalf("%s: no single QEMU process (%v)", g, c.qemuProcs(g))
		}
		boots[g] = len(c.segments(g))
	}
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	prevVersion := versions(st)["h1"]
	firstManager := st.Manager
	t.Logf("previous release %q on every host, manager %s, guests %v", prevVersion, firstManager, pids)

	samePIDs := func(when string) {
		t.Helper()
		if got := c.qemuPIDs(); !maps.Equal(got, pids) {
			t.Fatalf("%s: QEMU processes %v, want %v (a guest was restarted)", when, got, pids)
		}
	}
	// The manager's host last: one move of the manager, to a current agent.
	order := []*node{}
	for _, n := range c.nodes {
		if n.name != firstManager {
			order = append(order, n)
		}
	}
	order = append(order, c.node(firstManager))
	for _, n := range order {
		n.setPrev(false)
		stopped, ready := c.restartAgent(n, syscall.SIGTERM)
		c.waitHosts(60*time.Second, c.names()...)
		st, err := c.status()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s upgraded: stopped in %v, ready %v after SIGTERM; versions %v, manager %s", n.name, stopped.Round(10*time.Millisecond), ready.Round(10*time.Millisecond), versions(st), st.Manager)
		samePIDs("after upgrading " + n.name)
	}
	var current string
	c.poll("a manager on a current agent", 60*time.Second, func() bool {
		st, err := c.status()
		if err != nil || st.Manager == "" {
			return false
		}
		vs := versions(st)
		current = vs[st.Manager]
		for _, v := range vs {
			if v != current {
				return false
			}
		}
		return current != prevVersion && st.Manager != firstManager
	})
	t.Logf("every host runs %q", current)
	// Past a lease TTL: a lapsed lease would have shown by now. The new
	// manager knows every guest where it runs.
	c.waitStamp("g1", time.Now().Add(upgradeLeaseTTL), 60*time.Second)
	c.waitRunning(30*time.Second, home)
	samePIDs("after the upgrade")
	for _, g := range c.guests {
		if got := len(c.segments(g)); got != boots[g] {
			t.Errorf("%s booted again during the upgrade: %d boots, want %d", g, got, boots[g])
		}
	}
	// noneDown: no host went down or was fenced since, but for the clean
	// departures of hosts in empty (a stopping agent with no guest revokes
	// its lease: "is offline; nothing ran there, no fence needed").
	noneDown := func(since time.Time, empty ...string) {
		t.Helper()
		for _, e := range c.events() {
			if !e.At.After(since) || slices.ContainsFunc(empty, func(h string) bool { return e.Msg == "node "+h+" is offline; nothing ran there, no fence needed" }) {
				continue
			}
			if e.Kind == "fence" || strings.Contains(e.Msg, " failed") && strings.HasPrefix(e.Msg, "node ") || strings.Contains(e.Msg, "is offline") {
				t.Errorf("event during the upgrade: %s %s %s", e.At.Format("15:04:05.000"), e.Kind, e.Msg)
			}
		}
	}
	noneDown(t0)
	st, err = c.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Features == nil || st.Features.Level < 1 {
		t.Errorf("every host upgraded: cluster feature level %+v, want at least 1", st.Features)
	}

	// Downgrade one host, not the manager's: the previous release works
	// beside the current one.
	st, _ = c.status()
	var down *node
	for _, n := range c.nodes {
		if n.name != st.Manager {
			down = n
		}
	}
	t1 := time.Now()
	down.setPrev(true)
	c.restartAgent(down, syscall.SIGTERM)
	c.waitHosts(60*time.Second, c.names()...)
	c.poll("status showing the downgrade", 30*time.Second, func() bool {
		st, err = c.status()
		return err == nil && versions(st)[down.name] == prevVersion && st.Features != nil && st.Features.Level == 0
	})
	t.Logf("%s back on %q: versions %v, features %+v", down.name, prevVersion, versions(st), st.Features)
	samePIDs("after the downgrade of " + down.name)
	// A current agent stores the fence configuration in the clear for it
	// (store/oldreleases.go), and says so in status and the event log.
	c.poll("the fence configuration in the clear for "+down.name, 30*time.Second, func() bool {
		f := c.fenceForm(c.node(st.Manager))
		return f != nil && f.Clear && slices.Equal(f.OldHosts, []string{down.name})
	})
	c.event("fence configuration stored unsealed, readable by whoever reads the store: "+down.name+" ", t1)

	// Its guest migrates live from the previous release to a current host.
	g := "g" + strings.TrimPrefix(down.name, "h")
	dst := st.Manager
	// One request, given time: the manager answers once it has taken the
	// command (a retry after a slow answer would be refused: the migration
	// is under way).
	cl := client.New(c.node(dst).apiURL(), c.admin, c.tls)
	defer cl.Close()
	mctx, cancel := context.WithTimeout(c.ctx, 60*time.Second)
	_, err = cl.GuestCommand(mctx, g, "migrate", dst)
	cancel()
	if err != nil {
		t.Fatalf("migrate %s from the previous release on %s to %s: %v", g, down.name, dst, err)
	}
	c.waitRunning(60*time.Second, func(guest, n string) bool {
		if guest == g {
			return n == dst
		}
		return home(guest, n)
	})
	if got := len(c.segments(g)); got != boots[g] {
		t.Errorf("%s booted again on its migration from the previous release: %d boots, want %d", g, got, boots[g])
	}
	noneDown(t1)

	// The downgraded host becomes manager: the current manager's agent
	// restarts until it is (twice: the election takes candidates in the
	// order they campaigned, and the downgraded agent campaigned after the
	// third host's; more when a candidate's win goes stale and it campaigns
	// again, as the previous release does when its store member stops).
	var other *node
	for _, n := range c.nodes {
		if n != down && n.name != dst {
			other = n
		}
	}
	pids = singlePIDs(c, "after the migration of "+g)
	tTakeover := time.Now()
	for restarts := 0; ; restarts++ {
		var mgr string
		c.poll("a manager", 30*time.Second, func() bool {
			st, err = c.status()
			if err == nil {
				mgr = st.Manager
			}
			return mgr != ""
		})
		if mgr == down.name {
			t.Logf("%s (previous release) manages after %d restarts of the manager's agent", down.name, restarts)
			break
		}
		// 4 restarts were seen (at load 12-16): the cap was 4, and one
		// more re-campaign would have failed the test.
		if restarts == 8 {
			t.Fatalf("%s (previous release) is not manager after %d restarts of the manager's agent (%s manages)", down.name, restarts, mgr)
		}
		c.restartAgent(c.node(mgr), syscall.SIGTERM)
		c.waitHosts(60*time.Second, c.names()...)
	}
	samePIDs("after " + down.name + " took over")
	// It changes the placement, saved in format 1 only: g moves on to the
	// third host. The command goes through its own API, as the previous
	// release's CLI would send it.
	ocl := client.New(down.apiURL(), c.admin, c.tls)
	defer ocl.Close()
	mctx, cancel = context.WithTimeout(c.ctx, 60*time.Second)
	_, err = ocl.GuestCommand(mctx, g, "migrate", other.name)
	cancel()
	if err != nil {
		t.Fatalf("migrate %s to %s under the previous release's manager on %s: %v", g, other.name, down.name, err)
	}
	placed := func(guest, n string) bool {
		if guest == g {
			return n == other.name
		}
		return home(guest, n)
	}
	c.waitRunning(60*time.Second, placed)
	pids = singlePIDs(c, "after the migration of "+g+" by the previous release")
	noneDown(tTakeover, down.name)

	// It fences: the third host loses power, and the previous release's
	// manager, which reads the fence configuration in the clear, fences
	// it; its guests start again on the others only after that.
	lost := []string{g, "g" + strings.TrimPrefix(other.name, "h")}
	tFail := time.Now()
	if err := c.bed.PowerOff(c.ctx, other.name); err != nil {
		t.Fatal(err)
	}
	where := c.waitRunning(upgradeLeaseTTL+90*time.Second, func(guest, n string) bool {
		if slices.Contains(lost, guest) {
			return n != other.name
		}
		return placed(guest, n)
	})
	var fenced time.Time
	for _, e := range c.events() {
		if e.At.After(tFail) && e.Kind == "fence" && strings.HasPrefix(e.Msg, "fenced "+other.name+":") {
			fenced = e.At
			break
		}
	}
	if fenced.IsZero() {
		t.Fatalf("%s's guests run again on %v, but the previous release's manager on %s did not fence %s", other.name, where, down.name, other.name)
	}
	for _, guest := range lost {
		seg := c.waitNewBoot(guest, tFail, 120*time.Second) // a TCG boot
		if !seg.First.After(fenced) {
			t.Errorf("%s wrote its disk again at %s, before %s was fenced at %s", guest, seg.First.Format("15:04:05.000"), other.name, fenced.Format("15:04:05.000"))
		}
		boots[guest]++
	}
	t.Logf("%s powered off: fenced by the previous release's manager %v later, its guests run again on %v", other.name, fenced.Sub(tFail).Round(100*time.Millisecond), where)
	c.noDoubleRun()
	// Back on, empty: its agent (current) starts by itself.
	if err := c.bed.PowerOn(c.ctx, other.name); err != nil {
		t.Fatal(err)
	}
	c.waitHosts(90*time.Second, c.names()...)
	placed = func(guest, n string) bool { return where[guest] == n }
	pids = singlePIDs(c, "after the failover of "+other.name+"'s guests")
	tBack := time.Now()

	// Upgraded again: the next manager, a current agent, continues the
	// previous release's state (format 1, written after format 2): g stays
	// where that manager put it, nothing restarts, nothing is fenced.
	down.setPrev(false)
	c.restartAgent(down, syscall.SIGTERM)
	c.waitHosts(60*time.Second, c.names()...)
	c.poll("a current manager after the re-upgrade", 60*time.Second, func() bool {
		st, err = c.status()
		return err == nil && st.Manager != "" && st.Manager != down.name && versions(st)[down.name] == current && st.Features != nil && st.Features.Level >= 1
	})
	t.Logf("%s upgraded again: versions %v, manager %s", down.name, versions(st), st.Manager)
	// Past a lease TTL, as above.
	c.waitStamp(g, time.Now().Add(upgradeLeaseTTL), 60*time.Second)
	c.waitRunning(30*time.Second, placed)
	samePIDs("after the re-upgrade of " + down.name)
	for _, guest := range c.guests {
		if got := len(c.segments(guest)); got != boots[guest] {
			t.Errorf("%s booted again after the re-upgrade: %d boots, want %d", guest, got, boots[guest])
		}
	}
	// Nothing went down or was fenced since the third host came back,
	// under either manager; the fence configuration is sealed again.
	noneDown(tBack, down.name)
	c.noDoubleRun()
	c.poll("the fence configuration sealed again", 30*time.Second, func() bool {
		f := c.fenceForm(c.node(st.Manager))
		return f != nil && !f.Clear && len(f.OldHosts) == 0
	})
	c.event("fence configuration sealed again", tBack)
	t.Logf("previous release's manager on %s, its migration and the re-upgrade: %v", down.name, time.Since(tTakeover).Round(100*time.Millisecond))
}

// upgradeLeaseTTL is TestRollingUpgrade's lease TTL (see there).
const upgradeLeaseTTL = 20 * time.Second

// fenceForm is the fence configuration's form as n's agent (a current one)
// reports it in its status; nil when it does not answer.
func (c *testCluster) fenceForm(n *node) *store.FenceForm {
	cl := client.New(n.apiURL(), c.admin, c.tls)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	st, err := cl.Status(ctx)
	if err != nil {
		return nil
	}
	return st.FenceForm
}

// event waits until the event log holds an event since t0 whose message
// starts with prefix.
func (c *testCluster) event(prefix string, t0 time.Time) {
	c.t.Helper()
	c.poll("an event "+strconv.Quote(prefix), 30*time.Second, func() bool {
		return slices.ContainsFunc(c.events(), func(e cluster.Event) bool { return e.At.After(t0) && strings.HasPrefix(e.Msg, prefix) })
	})
}

// singlePIDs waits until every guest has one QEMU process (a migration's
// source exits shortly after it ends) and returns them.
func singlePIDs(c *testCluster, when string) map[string]int {
	c.t.Helper()
	var pids map[string]int
	c.poll("one QEMU process a guest "+when, 30*time.Second, func() bool {
		pids = c.qemuPIDs()
		for _, p := range pids {
			if p == 0 {
				return false
			}
		}
		return true
	})
	return pids
}
