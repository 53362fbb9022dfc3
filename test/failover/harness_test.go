package failover

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/fence"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/ha"
	"github.com/haven-ha/haven/internal/hypervisor/libvirt/libvirtd"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/storage"
	"github.com/haven-ha/haven/internal/testbed"
	"github.com/haven-ha/haven/internal/testguest"
)

var (
	rounds      = flag.Int("failover.rounds", 5, "rounds of random faults in TestRandomFaults (50 for the full run)")
	seedFlag    = flag.Int64("failover.seed", 0, "seed of TestRandomFaults (0: from the clock; the seed used is logged)")
	hypervisors = flag.String("failover.hypervisors", "qemu,libvirt", "the drivers each failover test runs with, comma-separated")
	keepLogs    = flag.Bool("failover.logs", false, "print the agents' logs at the end even when the test passes")
)

// havenBin is the haven binary TestMain builds.
var havenBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "haven-failover-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	havenBin = filepath.Join(dir, "haven")
	cmd := exec.Command("go", "build", "-o", havenBin, "github.com/haven-ha/haven/cmd/haven")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build haven:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Ports every agent listens on (each host has its own network namespace).
const (
	apiPort  = "7400"
	peerPort = "7401"
)

// node is one host of the bed and its agent.
type node struct {
	name string // node name = host name (h1, h2, ...)
	h    *testbed.Host
	dir  string // the agent's data dir
	log  string // the agent's output, appended over restarts

	mu   sync.Mutex
	proc *testbed.Process // guarded by mu
	from int64            // log offset of the current start; guarded by mu
	// prev: the agent runs the previous release (prevBin, TestRollingUpgrade),
	// started with only the flags that release knows; guarded by mu.
	prev bool
}

// recordDir is where n's agent records its manager terms (options.record).
func (n *node) recordDir() string { return filepath.Join(n.h.Dir, "record") }

func (n *node) apiURL() string { return "https://" + n.h.Addr.String() + ":" + apiPort }

// testCluster is a bed with one agent per host, the test guests and the
// double-run checker.
type testCluster struct {
	t        testing.TB
	ctx      context.Context
	bed      *testbed.Bed
	nodes    []*node
	files    testguest.Files
	admin    string
	join     string
	tls      *tls.Config
	checker  *testbed.DoubleRunChecker
	guests   []string
	hv       string        // the agents' --hypervisor
	witness  string        // the host whose agent runs with --witness, if any
	record   bool          // agents run with --record (options.record)
	leaseTTL time.Duration // options.leaseTTL

	stopChecker func() []testbed.Violation
}

type options struct {
	hosts    int
	watchdog bool // policy fencing=watchdog and no fence device
	// witness names a host whose agent runs with --witness (no
	// hypervisor, never runs guests, never fenced).
	witness string
	// hypervisor is the agents' driver: "qemu" (default) or "libvirt", where
	// every host boots a libvirtd of its own before its agent.
	hypervisor string
	// record: every agent records the manager terms it serves (--record
	// into recordDir).
	record bool
	// previous: every agent starts as the previous release (node.prev).
	previous bool
	// leaseTTL: every agent's --lease-ttl (both releases know it); 0: the
	// default.
	leaseTTL time.Duration
}

// newCluster builds the bed, starts h1 with --init and the others with
// --join, waits for every host online and configures fencing. Agents come
// back by themselves when a host is powered on (by the test or by the
// fence agent).
func newCluster(t testing.TB, o options) *testCluster {
	t.Helper()
	if o.hosts == 0 {
		o.hosts = 3
	}
	if o.hypervisor == "" {
		o.hypervisor = "qemu"
	}
	files := testguest.Build(t)
	bed := testbed.ForTest(t, testbed.Options{Hosts: o.hosts, Leg: true})
	ctx, cancel := context.WithCancel(context.Background())
	c := &testCluster{t: t, ctx: ctx, bed: bed, files: files, checker: testbed.NewDoubleRunChecker(), hv: o.hypervisor, witness: o.witness, record: o.record, leaseTTL: o.leaseTTL}
	for _, h := range bed.Hosts() {
		c.nodes = append(c.nodes, &node{name: h.Name, h: h, dir: filepath.Join(h.Dir, "haven"), log: filepath.Join(h.Dir, "agent.log"), prev: o.previous})
	}
	// Cleanups run last-registered first: stop agents and print logs before
	// the bed (registered by ForTest) is destroyed.
	t.Cleanup(func() {
		if t.Failed() || *keepLogs {
			c.dumpLogs()
		}
		cancel()
		if c.stopChecker != nil {
			c.stopChecker()
		}
	})
	// A host powered on again boots its libvirtd (libvirt variant) and its
	// agent. (A power-off also resets the host's emulated watchdog: the bed
	// and its fence agent see to that.)
	bed.SetHooks(testbed.Hooks{
		PowerOn: func(_ context.Context, h *testbed.Host) error {
			if err := c.bootLibvirt(h); err != nil {
				return err
			}
			return c.startAgent(c.node(h.Name), nil)
		},
		Shutdown: func(_ context.Context, h *testbed.Host) error { return c.gracefulShutdown(c.node(h.Name)) },
		Maintenance: func(_ context.Context, h *testbed.Host, on bool) error {
			var err error
			c.api(func(ctx context.Context, cl *client.Client) error {
				_, err = cl.Maintenance(ctx, h.Name, on)
				if err != nil && (client.IsStatus(err, 409) || client.IsStatus(err, 404)) {
					return nil // refused: the answer, not a transient failure
				}
				return err
			})
			return err
		},
	})
	if c.hv == "libvirt" {
		for _, h := range bed.Hosts() {
			if h.Name == c.witness {
				continue
			}
			if err := c.bootLibvirt(h); err != nil {
				t.Fatal(err)
			}
			// Keep the probed QEMU capabilities for the next test's daemons.
			t.Cleanup(h.SaveLibvirtCapabilities)
		}
	}
	stopWatch := bed.WatchPower(ctx, 50*time.Millisecond)
	t.Cleanup(stopWatch)
	// The bed plays the hosts' watchdogs (emulated: the hosts share one
	// kernel); they are armed only in watchdog mode while guests run.
	stopDogs := bed.WatchWatchdogs(ctx, 50*time.Millisecond)
	t.Cleanup(stopDogs)

	first := c.nodes[0]
	if err := c.startAgent(first, []string{"--init"}); err != nil {
		t.Fatal(err)
	}
	c.waitReady(first, 60*time.Second)
	joinRE := regexp.MustCompile(`--token (hvj\.\S+)`)
	c.poll("the join token in h1's output", 10*time.Second, func() bool {
		m := joinRE.FindStringSubmatch(c.logOf(first))
		if m != nil {
			c.join = m[1]
		}
		return m != nil
	})
	tok, err := os.ReadFile(filepath.Join(first.dir, "admin.token"))
	if err != nil {
		t.Fatalf("admin token of h1: %v", err)
	}
	c.admin = strings.TrimSpace(string(tok))
	ca, err := os.ReadFile(filepath.Join(first.dir, "pki", "ca.crt"))
	if err != nil {
		t.Fatalf("cluster CA: %v", err)
	}
	if c.tls, err = pki.ClientTLS(ca, nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes[1:] {
		if err := c.startAgent(n, []string{"--join", first.apiURL(), "--token", c.join}); err != nil {
			t.Fatal(err)
		}
		c.waitReady(n, 60*time.Second)
	}
	c.waitHosts(60*time.Second, c.names()...)

	if o.watchdog {
		c.api(func(ctx context.Context, cl *client.Client) error {
			_, err := cl.SetPolicy(ctx, map[string]any{"fencing": model.FencingWatchdog})
			return err
		})
	} else {
		c.setFencing()
	}
	c.sharedPool()
	c.stopChecker = c.checker.Start(ctx)
	return c
}

// bootLibvirt starts the host's libvirtd in the libvirt variant.
func (c *testCluster) bootLibvirt(h *testbed.Host) error {
	if c.hv != "libvirt" || h.Name == c.witness {
		return nil
	}
	return h.StartLibvirt(c.ctx, false)
}

func (c *testCluster) names() []string {
	var s []string
	for _, n := range c.nodes {
		s = append(s, n.name)
	}
	return s
}

func (c *testCluster) node(name string) *node {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no node %q", name)
	return nil
}

// startAgent starts n's agent with its data dir; extra is --init or
// --join for the first start. It does not wait for it to be ready.
func (c *testCluster) startAgent(n *node, extra []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil && !n.proc.Exited() {
		return nil
	}
	f, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	st, _ := f.Stat()
	fmt.Fprintf(f, "=== %s start %s%s\n", time.Now().Format(time.RFC3339Nano), strings.Join(extra, " "), map[bool]string{true: " (previous release)"}[n.prev])
	addr := n.h.Addr.String()
	bin := havenBin
	args := []string{"agent", "--node", n.name, "--data-dir", n.dir,
		"--listen", addr + ":" + apiPort, "--peer-listen", addr + ":" + peerPort}
	if n.prev {
		bin = prevBin // which knows none of the flags below
	} else {
		fenceAgent, err := testbed.FenceAgentPath()
		if err != nil {
			return err
		}
		args = append(args, "--fence-agent-dir", filepath.Dir(fenceAgent), "--storage-heartbeat", filepath.Join(c.bed.SharedDir(), "heartbeat"))
		if c.record {
			args = append(args, "--record", n.recordDir())
		}
	}
	if n.name == c.witness {
		args = append(args, "--witness")
	} else {
		args = append(args, "--hypervisor", c.hv, "--watchdog-device", n.h.WatchdogDevice())
	}
	if c.leaseTTL > 0 {
		args = append(args, "--lease-ttl", c.leaseTTL.String())
	}
	args = append(args, extra...)
	p, err := n.h.Start(c.ctx, testbed.Spec{Path: bin, Args: args, Role: testbed.RoleAgent, Stdout: f, Stderr: f})
	if err != nil {
		return fmt.Errorf("start agent on %s: %w", n.name, err)
	}
	n.proc, n.from = p, st.Size()
	return nil
}

// gracefulShutdown is a host's shutdown sequence (docs/daemon.md): record the
// shutdown, wait until the manager says the host is empty (`haven node
// shutdown --wait`), then stop the agent (SIGTERM), which leaves the cluster
// cleanly. The bed then powers the host off.
func (c *testCluster) gracefulShutdown(n *node) error {
	path := "/api/v1/nodes/" + n.name + "/shutdown"
	c.api(func(ctx context.Context, cl *client.Client) error {
		var st ha.ShutdownStatus
		return cl.Do(ctx, "POST", path, ha.ShutdownRequest{}, &st)
	})
	empty := c.poll(n.name+" empty for its shutdown", 120*time.Second, func() bool {
		var st ha.ShutdownStatus
		err := c.tryAPI(func(ctx context.Context, cl *client.Client) error { return cl.Do(ctx, "GET", path, nil, &st) })
		return err == nil && st.Ready
	})
	stopped := c.stopAgent(n, syscall.SIGTERM)
	c.t.Logf("shutdown of %s: empty after %v, agent stopped %v after SIGTERM", n.name, empty.Round(100*time.Millisecond), stopped.Round(100*time.Millisecond))
	return nil
}

// stopAgent stops n's agent, with SIGTERM (an orderly stop: an upgrade, a
// shutdown) or SIGKILL (a crash, through the bed's AgentKill), and waits
// until it has exited; it returns how long that took.
func (c *testCluster) stopAgent(n *node, sig syscall.Signal) time.Duration {
	c.t.Helper()
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil || p.Exited() {
		c.t.Fatalf("stop the agent of %s: it does not run", n.name)
	}
	start := time.Now()
	var err error
	if sig == syscall.SIGKILL {
		err = c.bed.AgentKill(c.ctx, n.name)
	} else {
		err = p.Signal(sig)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(60 * time.Second):
		// Its goroutines go to its log (the Go runtime's SIGQUIT dump).
		p.Signal(syscall.SIGQUIT)
		select {
		case <-p.Done():
		case <-time.After(5 * time.Second):
		}
		c.t.Fatalf("the agent of %s did not exit within 60 s of %v; its goroutines:\n%s", n.name, sig, tail(c.logOf(n), 400))
	}
	return time.Since(start)
}

// restartAgent stops n's agent with sig (stopAgent) and starts it again; it
// returns once the new agent (and its store member) is ready, with how long
// the stop took and how long until ready.
func (c *testCluster) restartAgent(n *node, sig syscall.Signal) (stopped, ready time.Duration) {
	c.t.Helper()
	start := time.Now()
	stopped = c.stopAgent(n, sig)
	if err := c.startAgent(n, nil); err != nil {
		c.t.Fatal(err)
	}
	c.waitReady(n, 60*time.Second)
	return stopped, time.Since(start)
}

// logOf is n's agent output since its latest start.
func (c *testCluster) logOf(n *node) string {
	n.mu.Lock()
	from := n.from
	n.mu.Unlock()
	b, _ := os.ReadFile(n.log)
	if int64(len(b)) < from {
		return ""
	}
	return string(b[from:])
}

func (c *testCluster) waitReady(n *node, within time.Duration) {
	c.t.Helper()
	c.poll("agent "+n.name+" ready", within, func() bool {
		n.mu.Lock()
		p := n.proc
		n.mu.Unlock()
		if p != nil && p.Exited() {
			c.t.Fatalf("agent %s exited: %v\n%s", n.name, p.Wait(), tail(c.logOf(n), 40))
		}
		return strings.Contains(c.logOf(n), `msg="agent ready"`)
	})
}

// poll checks cond every 100 ms until it holds, failing the test after
// within.
func (c *testCluster) poll(what string, within time.Duration, cond func() bool) time.Duration {
	c.t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > within {
			c.t.Fatalf("%s: not within %v", what, within)
		}
		select {
		case <-c.ctx.Done():
			c.t.Fatalf("%s: %v", what, c.ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tryAPI runs fn against each agent whose host is on until one answers.
func (c *testCluster) tryAPI(fn func(context.Context, *client.Client) error) error {
	return c.tryAPIExcept("", fn)
}

// tryAPIExcept is tryAPI that does not ask host skip (one cut off from the
// others, whose answers take the store's timeout).
func (c *testCluster) tryAPIExcept(skip string, fn func(context.Context, *client.Client) error) error {
	var errs []error
	for _, n := range c.nodes {
		if !n.h.PoweredOn() || n.h.NetworkCut() || n.name == skip {
			continue
		}
		cl := client.New(n.apiURL(), c.admin, c.tls)
		ctx, cancel := context.WithTimeout(c.ctx, 3*time.Second)
		err := fn(ctx, cl)
		cancel()
		cl.Close()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", n.name, err))
	}
	return errors.Join(errs...)
}

// api is tryAPI retried for up to 20 s (a new manager or store leader may
// be on its way).
func (c *testCluster) api(fn func(context.Context, *client.Client) error) {
	c.t.Helper()
	var last error
	defer func() {
		if last != nil && c.t.Failed() {
			c.t.Logf("the agents' last answers: %v", last)
		}
	}()
	c.poll("an agent answering the API", 20*time.Second, func() bool {
		last = c.tryAPI(fn)
		return last == nil
	})
}

// setFencing gives every node the bed's fence device.
func (c *testCluster) setFencing() {
	c.t.Helper()
	path, err := testbed.FenceAgentPath()
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := fence.Config{Devices: []fence.Device{{Name: "bed", Agent: path, Params: c.bed.FenceDeviceParams(), Plugs: map[string]string{}, Timeout: 20 * time.Second}},
		Levels: map[string][]fence.Level{}}
	for _, n := range c.nodes {
		cfg.Devices[0].Plugs[n.name] = n.name
		cfg.Levels[n.name] = []fence.Level{{Devices: []string{"bed"}}}
	}
	c.api(func(ctx context.Context, cl *client.Client) error {
		_, err := cl.SetFenceConfig(ctx, cfg)
		return err
	})
}

// sharedPool declares the bed's shared directory a shared storage pool, as
// an operator declares the NFS mount the guests' disks are on: without it the
// guests could not fail over (their disks would be local to one host).
func (c *testCluster) sharedPool() {
	c.t.Helper()
	c.api(func(ctx context.Context, cl *client.Client) error {
		_, err := cl.CreatePool(ctx, storage.Pool{Name: "shared", Kind: storage.KindDir, Path: c.bed.SharedDir(), Shared: true})
		return err
	})
	// Every file a guest names must be in a pool: the test guest's kernel
	// and initrd too.
	c.api(func(ctx context.Context, cl *client.Client) error {
		_, err := cl.CreatePool(ctx, storage.Pool{Name: "testguest", Kind: storage.KindDir, Path: filepath.Dir(c.files.Kernel)})
		return err
	})
}

// domain creates an ordered failover domain.
func (c *testCluster) domain(name string, members ...string) {
	c.t.Helper()
	d := model.Domain{Name: name, Ordered: true}
	for _, m := range members {
		d.Members = append(d.Members, model.DomainMember{Node: m})
	}
	c.api(func(ctx context.Context, cl *client.Client) error {
		_, err := cl.CreateDomain(ctx, d)
		if client.IsStatus(err, 409) {
			return nil
		}
		return err
	})
}

// guest creates a migratable test guest whose disk and serial log are on
// the shared dir, and has the checker watch its disk.
func (c *testCluster) guest(name, domain, node string) {
	c.t.Helper()
	c.guestWith(name, domain, node, nil)
}

// guestWith creates a guest like guest, with extra fields of its form
// (health checks, recovery...).
func (c *testCluster) guestWith(name, domain, node string, extra map[string]any) {
	c.t.Helper()
	disk := filepath.Join(c.bed.SharedDir(), name+".img")
	if err := testguest.CreateDisk(disk, 1<<20); err != nil {
		c.t.Fatal(err)
	}
	form := map[string]any{
		"name": name, "memory": testguest.Memory, "vcpus": 1, "migratable": true,
		"disks":      []guestdef.Disk{{Path: disk, Format: "raw", NoImageLock: true}},
		"boot":       guestdef.Boot{Kernel: c.files.Kernel, Initrd: c.files.Initrd, Cmdline: testguest.Cmdline},
		"serial_log": filepath.Join(c.bed.SharedDir(), name+".serial"),
	}
	for k, v := range extra {
		form[k] = v
	}
	if domain != "" {
		form["domain"] = domain
	}
	if node != "" {
		form["node"] = node
	}
	c.checker.Watch(name, disk)
	c.api(func(ctx context.Context, cl *client.Client) error {
		_, err := cl.CreateGuest(ctx, form)
		if client.IsStatus(err, 409) {
			return nil
		}
		return err
	})
	c.guests = append(c.guests, name)
}

// guestRows reads the guest list from any agent that answers.
func (c *testCluster) guestRows() (map[string]api.GuestRow, error) {
	rows := map[string]api.GuestRow{}
	err := c.tryAPI(func(ctx context.Context, cl *client.Client) error {
		gs, err := cl.Guests(ctx)
		if err != nil {
			return err
		}
		for _, g := range gs {
			rows[g.Name] = g
		}
		return nil
	})
	return rows, err
}

// status reads the cluster status from any agent in the quorate part.
func (c *testCluster) status() (*api.Status, error) {
	var st *api.Status
	err := c.tryAPI(func(ctx context.Context, cl *client.Client) error {
		s, err := cl.Status(ctx)
		if err != nil {
			return err
		}
		if !s.Quorum.OK {
			return fmt.Errorf("no quorum")
		}
		st = s
		return nil
	})
	return st, err
}

// waitHosts waits until the named hosts are online.
func (c *testCluster) waitHosts(within time.Duration, names ...string) {
	c.t.Helper()
	c.poll("hosts "+strings.Join(names, ",")+" online", within, func() bool {
		st, err := c.status()
		if err != nil {
			return false
		}
		for _, want := range names {
			ok := false
			for _, h := range st.Hosts {
				if h.Name == want && h.State == api.HostOnline {
					ok = true
				}
			}
			if !ok {
				return false
			}
		}
		return true
	})
}

// waitHostState waits until the quorate part of the cluster shows host h
// in state (api.HostOnline or api.HostOffline).
func (c *testCluster) waitHostState(h, state string, within time.Duration) {
	c.t.Helper()
	c.poll("host "+h+" "+state, within, func() bool {
		st, err := c.status()
		if err != nil {
			return false
		}
		for _, x := range st.Hosts {
			if x.Name == h {
				return x.State == state
			}
		}
		return false
	})
}

// waitRunning waits until every named guest is started and running, on a
// node accepted by where (nil: any), and its disk shows it writing; it
// returns where each runs.
func (c *testCluster) waitRunning(within time.Duration, where func(guest, node string) bool, guests ...string) map[string]string {
	c.t.Helper()
	if len(guests) == 0 {
		guests = c.guests
	}
	var on map[string]string
	var last map[string]api.GuestRow
	start := time.Now()
	for {
		rows, err := c.guestRows()
		if err == nil {
			last = rows
			on = map[string]string{}
			for _, g := range guests {
				r, ok := rows[g]
				if ok && r.State == "started" && r.Running && (where == nil || where(g, r.Node)) && c.qemuOn(g) == r.Node {
					on[g] = r.Node
				}
			}
			if len(on) == len(guests) {
				return on
			}
		}
		if time.Since(start) > within {
			var detail []string
			for _, g := range guests {
				if _, ok := on[g]; ok {
					continue
				}
				_ = c.tryAPI(func(ctx context.Context, cl *client.Client) error {
					gi, err := cl.Guest(ctx, g)
					if err == nil {
						detail = append(detail, fmt.Sprintf("%s: runtime %+v op %+v", g, gi.Runtime, gi.Runtime.Op))
					}
					return err
				})
			}
			c.t.Fatalf("guests %v not all running within %v: rows %+v, qemu on %v; %s", guests, within, last, c.qemuHosts(guests), strings.Join(detail, "; "))
		}
		select {
		case <-c.ctx.Done():
			c.t.Fatal(c.ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *testCluster) qemuHosts(guests []string) map[string]string {
	m := map[string]string{}
	for _, g := range guests {
		m[g] = c.qemuOn(g)
	}
	return m
}

// qemuOn says on which host a QEMU process for guest runs: "" when none,
// "h1+h2" when several (as during a live migration, where one waits
// -incoming).
func (c *testCluster) qemuOn(guest string) string {
	var where []string
	for _, p := range c.qemuProcs(guest) {
		where = append(where, p.node)
	}
	slices.Sort(where)
	return strings.Join(slices.Compact(where), "+")
}

// qemuProc is a QEMU process of a guest: its host and PID.
type qemuProc struct {
	node string
	pid  int
}

// qemuProcs finds the guest's QEMU processes by looking at every process of
// every host's network namespace. The disk's path shows in QEMU's command
// line as the QEMU driver writes it (-drive file=PATH,...) or as libvirt
// does (-blockdev {"filename":"PATH",...}).
func (c *testCluster) qemuProcs(guest string) []qemuProc {
	disk := filepath.Join(c.bed.SharedDir(), guest+".img")
	asDrive, asBlockdev := []byte("file="+disk+","), []byte(`"filename":"`+disk+`"`)
	var procs []qemuProc
	for _, n := range c.nodes {
		pids, _ := n.h.PIDs()
		for _, pid := range pids {
			cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err != nil || !bytes.Contains(cmd, []byte("qemu")) {
				continue
			}
			if bytes.Contains(cmd, asDrive) || bytes.Contains(cmd, asBlockdev) {
				procs = append(procs, qemuProc{node: n.name, pid: pid})
			}
		}
	}
	return procs
}

// events returns the cluster's event log, oldest first.
func (c *testCluster) events() []cluster.Event {
	c.t.Helper()
	var evs []cluster.Event
	c.api(func(ctx context.Context, cl *client.Client) error {
		var err error
		evs, err = cl.Events(ctx, client.EventFilter{N: 2000})
		return err
	})
	return evs
}

// fencedCount counts successful fence operations on node since t0 in the
// event log ("fenced h1: ...", written by the manager's fencer).
func (c *testCluster) fencedCount(node string, t0 time.Time) int {
	n := 0
	for _, e := range c.events() {
		if e.At.After(t0) && e.Kind == "fence" && strings.HasPrefix(e.Msg, "fenced "+node+":") {
			n++
		}
	}
	return n
}

// violations fails the test on any double run seen so far.
func (c *testCluster) noDoubleRun() {
	c.t.Helper()
	if v := c.checker.Violations(); len(v) > 0 {
		c.t.Fatalf("DOUBLE RUN: %v", v)
	}
}

// waitNewBoot waits until the checker has seen a boot of the guest that
// began writing after t0 (a restart or a start elsewhere), and returns it.
func (c *testCluster) waitNewBoot(guest string, t0 time.Time, within time.Duration) testbed.Segment {
	c.t.Helper()
	var seg testbed.Segment
	c.poll(guest+" booted again", within, func() bool {
		s := c.segments(guest)
		if len(s) == 0 {
			return false
		}
		seg = s[len(s)-1]
		return seg.First.After(t0)
	})
	return seg
}

// segments returns the guest's writers as its disk saw them.
func (c *testCluster) segments(guest string) []testbed.Segment { return c.checker.Segments(guest) }

// waitStamp waits until the checker has seen the guest write a stamp after
// t0, and returns the latest segment.
func (c *testCluster) waitStamp(guest string, t0 time.Time, within time.Duration) testbed.Segment {
	c.t.Helper()
	var seg testbed.Segment
	c.poll(guest+" writing its disk", within, func() bool {
		s := c.segments(guest)
		if len(s) == 0 {
			return false
		}
		seg = s[len(s)-1]
		return seg.Last.After(t0)
	})
	return seg
}

// bootSettle is how long a guest's current boot has written its disk
// before waitBooted counts its kernel's start-up as over (the test guest's
// kernel runs its last start-up work, such as its crypto self-tests, about
// 2.5 s after it boots; its init writes the disk from about 1.5 s).
const bootSettle = 4 * time.Second

// waitBooted waits until guest's current boot, the one that writes its disk
// after t0 (the guest's only QEMU runs then), has been writing it for
// bootSettle.
func (c *testCluster) waitBooted(guest string, t0 time.Time, within time.Duration) {
	c.t.Helper()
	c.poll(guest+" booted", within, func() bool {
		s := c.segments(guest)
		if len(s) == 0 {
			return false
		}
		last := s[len(s)-1]
		return last.Last.After(t0) && last.Last.Sub(last.First) >= bootSettle
	})
}

// waitSettled waits until the manager sees every host that it knows back
// online, and every guest runs, started, with no operation in flight, where
// its only QEMU runs. It returns where each guest runs.
func (c *testCluster) waitSettled(within time.Duration) map[string]string {
	c.t.Helper()
	var on map[string]string
	c.poll("cluster settled", within, func() bool {
		st, err := c.status()
		if err != nil {
			return false
		}
		for _, h := range st.Hosts {
			if h.HA != "" && h.HA != "online" {
				return false
			}
		}
		rows, err := c.guestRows()
		if err != nil {
			return false
		}
		on = map[string]string{}
		for _, g := range c.guests {
			r, ok := rows[g]
			if !ok || r.State != "started" || !r.Running || r.Op != nil || c.qemuOn(g) != r.Node {
				return false
			}
			on[g] = r.Node
		}
		return true
	})
	return on
}

// serialSize is how much guest's serial console (appended across its boots
// and hosts) holds so far: guestOops reads what comes after.
func (c *testCluster) serialSize(guest string) int64 {
	fi, err := os.Stat(filepath.Join(c.bed.SharedDir(), guest+".serial"))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// kernelFailures are what a guest kernel prints when it fails on its own.
var kernelFailures = []string{"Kernel panic", "list_del corruption", "list_add corruption", "kernel BUG at", "BUG:", "Oops:", "general protection fault"}

// kernelFailure is the first line of console in which a kernel fails, or "".
func kernelFailure(console []byte) string {
	for _, line := range strings.Split(string(console), "\n") {
		for _, f := range kernelFailures {
			if strings.Contains(line, f) {
				return strings.TrimSpace(line)
			}
		}
	}
	return ""
}

// guestOops is the first line of guest's serial console past offset in
// which its kernel fails on its own (an oops, a BUG, a panic), or "".
// Under TCG, now and then, a guest's kernel panics a few seconds after a
// live migration (list corruption; seen with QEMU 7.2 on both drivers, and
// never with a guest that was not migrated): a restart that follows is the
// guest's own doing, and Haven's right answer to it. The tests accept such
// a restart, say so, and still fail any other.
func (c *testCluster) guestOops(guest string, offset int64) string {
	b, err := os.ReadFile(filepath.Join(c.bed.SharedDir(), guest+".serial"))
	if err != nil || int64(len(b)) <= offset {
		return ""
	}
	return kernelFailure(b[offset:])
}

// restartedBy checks guest's boots against want, its boots before a step
// whose serial console began at offset: a restart is an error unless the
// guest's own kernel failed (guestOops). what names the step.
func (c *testCluster) restartedBy(what, guest string, want int, offset int64) bool {
	c.t.Helper()
	segs := c.segments(guest)
	if len(segs) == want {
		return false
	}
	if oops := c.guestOops(guest, offset); oops != "" && len(segs) > want {
		c.t.Logf("%s: %s restarted after its own kernel failed (%q), a TCG guest after a live migration: not counted (%d boots, was %d)", what, guest, oops, len(segs), want)
		return false
	}
	c.t.Errorf("%s: %s restarted: %d boots, want %d (segments %+v)", what, guest, len(segs), want, segs)
	return true
}

func (c *testCluster) dumpLogs() {
	for _, n := range c.nodes {
		b, _ := os.ReadFile(n.log)
		if os.Getenv("HAVEN_E2E_LOGS") != "" {
			c.t.Logf("---- agent log of %s ----\n%s", n.name, b)
		} else {
			c.t.Logf("---- agent log of %s (last lines; HAVEN_E2E_LOGS=1 for all) ----\n%s", n.name, tail(string(b), 150))
		}
		if c.hv == "libvirt" {
			c.t.Logf("---- libvirt of %s ----\n%s", n.name, n.h.LibvirtLog())
		}
	}
	// The guests' consoles (appended across boots and hosts): a guest
	// that stopped writing, or rebooted, says why there.
	for _, g := range c.guests {
		if b, err := os.ReadFile(filepath.Join(c.bed.SharedDir(), g+".serial")); err == nil {
			c.t.Logf("---- serial console of %s (last lines) ----\n%s", g, tail(string(b), 60))
		}
	}
	var evs []cluster.Event
	_ = c.tryAPI(func(ctx context.Context, cl *client.Client) error {
		var err error
		evs, err = cl.Events(ctx, client.EventFilter{N: 2000})
		return err
	})
	for _, e := range evs {
		c.t.Logf("event %s %-8s %-3s %-4s %s", e.At.Format("15:04:05.000"), e.Kind, e.Node, e.Guest, e.Msg)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// libvirtConfined checks, on a libvirt cluster after live migrations, that
// every migration went over TLS, the guest's memory (each agent logs
// whether it did; that the flag means TLS with the certificates checked is
// internal/hypervisor/libvirt's TestMigrate) and the libvirtds' control
// connection alike (libvirtControlTLS), and that every guest's QEMU runs as
// libvirt's unprivileged user under seccomp, not as root.
func (c *testCluster) libvirtConfined() {
	c.t.Helper()
	migrations := 0
	for _, n := range c.nodes {
		b, _ := os.ReadFile(n.log)
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, `msg="live migration started"`) || !strings.Contains(line, "driver=libvirt") {
				continue
			}
			migrations++
			if !strings.Contains(line, " tls=true") {
				c.t.Errorf("%s: a live migration without TLS: %s", n.name, line)
			}
			if !strings.Contains(line, ` target="qemu+tls://`) && !strings.Contains(line, " target=qemu+tls://") {
				c.t.Errorf("%s: a live migration whose libvirtd control connection is not TLS: %s", n.name, line)
			}
		}
	}
	c.libvirtControlTLS()
	if migrations == 0 {
		c.t.Error("no libvirt live migration in the agents' logs")
	}
	u, err := user.Lookup(libvirtd.QEMUUser)
	if err != nil {
		c.t.Fatal(err)
	}
	qemus := 0
	for _, n := range c.nodes {
		for _, g := range c.guests {
			f := filepath.Join(filepath.Dir(n.h.LibvirtSocket()), "qemu", g+".pid")
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			status, err := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/status")
			if err != nil {
				continue // ended meanwhile
			}
			qemus++
			for _, line := range strings.Split(string(status), "\n") {
				if v, ok := strings.CutPrefix(line, "Uid:"); ok && strings.Fields(v)[1] != u.Uid {
					c.t.Errorf("%s: QEMU %s runs with uids %s, want %s's %s", n.name, f, strings.TrimSpace(v), libvirtd.QEMUUser, u.Uid)
				}
				if v, ok := strings.CutPrefix(line, "Seccomp:"); ok && strings.TrimSpace(v) != "2" {
					c.t.Errorf("%s: QEMU %s: Seccomp %s, want 2 (filtered)", n.name, f, strings.TrimSpace(v))
				}
			}
		}
	}
	c.t.Logf("libvirt: %d live migrations; %d guests' QEMU processes checked for user %s and seccomp", migrations, qemus, libvirtd.QEMUUser)
	if qemus == 0 {
		c.t.Error("no libvirt QEMU process found")
	}
}

// libvirtControlTLS checks that the libvirtds talk to each other over TLS
// with the cluster's certificates only: from every host, a peer's libvirtd
// refuses plain qemu+tcp (it does not listen on it) and answers qemu+tls
// with the certificates the host's agent wrote in /etc/libvirt/haven-pki,
// both sides checking the other's against the cluster CA (the bed's
// libvirtds start with a placeholder CA of their own: only the agents'
// certificates, loaded by virt-admin server-update-tls, can pass).
func (c *testCluster) libvirtControlTLS() {
	c.t.Helper()
	var hosts []*node
	for _, n := range c.nodes {
		if n.name != c.witness {
			hosts = append(hosts, n)
		}
	}
	pairs := 0
	defer func() {
		c.t.Logf("libvirt control connections: %d host pairs refuse qemu+tcp and answer qemu+tls", pairs)
	}()
	for _, from := range hosts {
		for _, to := range hosts {
			if from == to || !from.h.PoweredOn() || !to.h.PoweredOn() {
				continue
			}
			pairs++
			addr := to.h.Addr.String()
			out, err := from.h.Shell(c.ctx, "virsh -c qemu+tcp://"+addr+"/system hostname 2>&1")
			if err == nil || !strings.Contains(out, "Connection refused") {
				c.t.Errorf("qemu+tcp from %s to %s: %q, %v; want the connection refused", from.name, to.name, out, err)
			}
			out, err = from.h.Shell(c.ctx, "virsh -c '"+to.h.LibvirtURI()+"' hostname 2>&1")
			if err != nil || strings.TrimSpace(out) != to.name {
				c.t.Errorf("qemu+tls from %s to %s with the cluster's certificates: %q, %v; want %s's host name", from.name, to.name, out, err, to.name)
			}
		}
	}
}

// haven runs the haven CLI on this machine and fails the test on error.
func (c *testCluster) haven(args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, havenBin, args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("haven %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
