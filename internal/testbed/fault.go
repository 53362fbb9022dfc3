package testbed

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Hooks are the caller's extension points. The bed calls them after its
// own part of an operation; all are optional except where noted.
type Hooks struct {
	// PowerOn runs after a host is powered on (Bed.PowerOn) and its boot
	// script, if any, started: restart the host's agent here.
	PowerOn func(ctx context.Context, h *Host) error
	// PowerOff runs after a host was powered off by the bed (not by the fence
	// agent, which runs in a process of its own).
	PowerOff func(ctx context.Context, h *Host)
	// Shutdown performs a graceful host shutdown (such as `haven node
	// shutdown` against the host's agent). Bed.Shutdown calls it, then powers
	// the host off. Required by Bed.Shutdown.
	Shutdown func(ctx context.Context, h *Host) error
	// Maintenance puts a host into maintenance (on) or takes it out (such as
	// `haven node maintenance`). Required by Bed.Maintenance.
	Maintenance func(ctx context.Context, h *Host, on bool) error
}

// SetHooks replaces the bed's hooks.
func (b *Bed) SetHooks(h Hooks) {
	b.mu.Lock()
	b.hooks = h
	b.mu.Unlock()
}

func (b *Bed) getHooks() Hooks {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hooks
}

func (h *Host) stateFile(name string) string { return filepath.Join(h.bed.hostDir(h.Name), name) }

// PoweredOn reports whether the host is on (state file host/<name>/power).
func (h *Host) PoweredOn() bool { return h.power().on }

// Boots counts the host's power-ons, by the bed or the fence agent.
func (h *Host) Boots() int { return h.power().boots }

// power reads the state file host/<name>/power, "on N" or "off N" where N
// counts the power-ons (one file, replaced atomically, so a reader never
// sees a half-done change).
func (h *Host) power() powerState {
	data, err := os.ReadFile(h.stateFile("power"))
	if err != nil {
		return powerState{on: true}
	}
	f := strings.Fields(string(data))
	st := powerState{on: len(f) == 0 || f[0] != "off"}
	if len(f) > 1 {
		st.boots, _ = strconv.Atoi(f[1])
	}
	return st
}

func (h *Host) setPower(st powerState) error {
	word := "off"
	if st.on {
		word = "on"
	}
	return writeFileAtomic(h.stateFile("power"), fmt.Appendf(nil, "%s %d\n", word, st.boots))
}

// PowerOff pulls the host's plug: the host is marked off (Start fails until
// PowerOn), its link on the bridge goes down (a dead host does not answer, not
// even with a TCP reset), and every process in its network namespace and
// every process group the bed recorded for it gets SIGKILL, agents and
// guests alike, until none is left. Then the PowerOff hook runs.
func (b *Bed) PowerOff(ctx context.Context, host string) error {
	h, err := b.lookup(host)
	if err != nil {
		return err
	}
	if err := b.powerOff(ctx, h); err != nil {
		return fmt.Errorf("power off host %q: %w", host, err)
	}
	b.log.Info("host powered off", "node", host, "op", "poweroff")
	if hook := b.getHooks().PowerOff; hook != nil {
		hook(ctx, h)
	}
	return nil
}

// powerOff does PowerOff's own part, under the host's power lock.
func (b *Bed) powerOff(ctx context.Context, h *Host) error {
	h.powerMu.Lock()
	defer h.powerMu.Unlock()
	st := powerState{on: false, boots: h.Boots()}
	if err := h.setPower(st); err != nil {
		return err
	}
	b.setKnown(h, st.on, st.boots)
	if err := b.setLink(ctx, h, false); err != nil {
		return err
	}
	if err := b.killHost(ctx, h); err != nil {
		return err
	}
	// A machine that lost power comes back with its watchdog disarmed.
	return disarmEmulatedWatchdog(h)
}

// PowerOn marks the host on, brings its link up again (unless the network is
// cut), starts its boot script (SetBootScript) if it has one, and runs the
// PowerOn hook, which is where the caller restarts the host's agent.
func (b *Bed) PowerOn(ctx context.Context, host string) error {
	h, err := b.lookup(host)
	if err != nil {
		return err
	}
	if err := b.powerOn(ctx, h); err != nil {
		return fmt.Errorf("power on host %q: %w", host, err)
	}
	b.log.Info("host powered on", "node", host, "op", "poweron")
	if hook := b.getHooks().PowerOn; hook != nil {
		if err := hook(ctx, h); err != nil {
			return fmt.Errorf("power on host %q: hook: %w", host, err)
		}
	}
	return nil
}

// powerOn does PowerOn's own part: the state change under the host's power
// lock, then the boot script.
func (b *Bed) powerOn(ctx context.Context, h *Host) error {
	h.powerMu.Lock()
	st := powerState{on: true, boots: h.Boots() + 1}
	err := h.setPower(st)
	if err == nil {
		b.setKnown(h, st.on, st.boots)
		if !h.NetworkCut() {
			err = b.setLink(ctx, h, true)
		}
	}
	h.powerMu.Unlock()
	if err != nil {
		return err
	}
	boot := h.stateFile("boot")
	if !fileExists(boot) {
		return nil
	}
	log, err := os.OpenFile(h.stateFile("boot.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	if _, err := h.Start(context.WithoutCancel(ctx), Spec{Path: boot, Role: "boot", Stdout: log, Stderr: log}); err != nil {
		return fmt.Errorf("boot script: %w", err)
	}
	return nil
}

type powerState struct {
	on    bool
	boots int
}

func (b *Bed) setKnown(h *Host, on bool, boots int) {
	b.mu.Lock()
	if b.known == nil {
		b.known = map[string]powerState{}
	}
	b.known[h.Name] = powerState{on, boots}
	b.mu.Unlock()
}

// WatchPower makes the PowerOff and PowerOn hooks run also when someone
// else changes a host's power, above all the fence agent run by Haven's
// manager: it polls the hosts' power state every interval (default 50 ms)
// until ctx ends or stop is called (stop waits for a hook in progress). A
// reboot too quick to see as off counts as off then on (the power-on counter
// moved). Changes made through this Bed value run the hooks once, as before.
func (b *Bed) WatchPower(ctx context.Context, interval time.Duration) (stop func()) {
	if interval <= 0 {
		interval = 50 * time.Millisecond
	}
	for _, h := range b.hosts {
		b.mu.Lock()
		_, ok := b.known[h.Name]
		b.mu.Unlock()
		if !ok {
			st := h.power()
			b.setKnown(h, st.on, st.boots)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.watchPower(ctx, interval)
	}()
	return func() { cancel(); <-done }
}

func (b *Bed) watchPower(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, h := range b.hosts {
			h.powerMu.RLock()
			now := h.power()
			b.mu.Lock()
			was := b.known[h.Name]
			b.known[h.Name] = now
			hooks := b.hooks
			b.mu.Unlock()
			h.powerMu.RUnlock()
			if now == was {
				continue
			}
			wentOff := was.on && (!now.on || now.boots != was.boots)
			cameOn := now.on && (!was.on || now.boots != was.boots)
			if wentOff {
				b.log.Info("host powered off by someone else", "node", h.Name, "op", "poweroff")
				if hooks.PowerOff != nil {
					hooks.PowerOff(ctx, h)
				}
			}
			if cameOn {
				b.log.Info("host powered on by someone else", "node", h.Name, "op", "poweron")
				if hooks.PowerOn != nil {
					if err := hooks.PowerOn(ctx, h); err != nil {
						b.log.Error("power-on hook", "node", h.Name, "err", err)
					}
				}
			}
		}
	}
}

// SetBootScript gives the host a script (sh, with its #! line) that the bed
// and the fence agent run in the host (FullHost mode) each time it powers
// on, output appended to host/<name>/boot.log. It is how a host whose power
// the fence agent cycles gets its agent back without the test's help. An
// empty script removes it.
func (h *Host) SetBootScript(script string) error {
	f := h.stateFile("boot")
	if script == "" {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := writeFileAtomic(f, []byte(script)); err != nil {
		return fmt.Errorf("set boot script of host %q: %w", h.Name, err)
	}
	return os.Chmod(f, 0o755)
}

// AgentKill sends SIGKILL to the host's agent (the processes started with
// Role RoleAgent, with their process groups) and nothing else.
func (b *Bed) AgentKill(ctx context.Context, host string) error {
	h, err := b.lookup(host)
	if err != nil {
		return err
	}
	n := 0
	for _, r := range h.Processes() {
		if r.Role != RoleAgent {
			continue
		}
		n++
		killGroup(r.PID, r.Start)
	}
	if n == 0 {
		return fmt.Errorf("kill agent on host %q: no running process has role %q (start it with Spec.Role = testbed.RoleAgent)", host, RoleAgent)
	}
	b.log.Info("agent killed", "node", host, "op", "agentkill")
	return b.waitGone(ctx, h, func(r ProcRecord) bool { return r.Role == RoleAgent })
}

// killHost kills, until none is left, every process in the host's network
// namespace and every recorded process group of the host, then waits for the
// recorded processes to be gone.
func (b *Bed) killHost(ctx context.Context, h *Host) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		killed := 0
		for _, r := range h.Processes() {
			killGroup(r.PID, r.Start)
			killed++
		}
		pids, err := netnsPIDs(h.Netns)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
			killed++
		}
		if killed == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill processes of host %q: %d still alive after 10 s", h.Name, killed)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (b *Bed) waitGone(ctx context.Context, h *Host, match func(ProcRecord) bool) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := slices.DeleteFunc(h.Processes(), func(r ProcRecord) bool { return !match(r) })
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("host %q: %d processes survived SIGKILL", h.Name, len(left))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// killGroup sends SIGKILL to a recorded process's group, unless its PID now
// belongs to another process (start time differs). A group whose leader
// died can still be killed: Linux never reuses a PID as long as a process
// group carries it.
func killGroup(pid int, start uint64) {
	if st, err := procStart(pid); err == nil && start != 0 && st != start {
		return
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	syscall.Kill(pid, syscall.SIGKILL)
}

// setLink sets the host's port on the bridge up or down.
func (b *Bed) setLink(ctx context.Context, h *Host, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return ip(ctx, "-n", b.BridgeNetns(), "link", "set", h.Name, state)
}

// NetworkCut takes the host's port on the bridge down: the host keeps its
// address but reaches nobody and nobody reaches it. It lasts until
// NetworkRestore, across power cycles.
func (b *Bed) NetworkCut(ctx context.Context, host string) error {
	h, err := b.lookup(host)
	if err != nil {
		return err
	}
	if err := os.WriteFile(h.stateFile("cut"), nil, 0o644); err != nil {
		return fmt.Errorf("cut network of host %q: %w", host, err)
	}
	if err := b.setLink(ctx, h, false); err != nil {
		return fmt.Errorf("cut network of host %q: %w", host, err)
	}
	b.log.Info("network cut", "node", host, "op", "cut")
	return nil
}

// NetworkRestore undoes NetworkCut (the link stays down while the host is
// powered off).
func (b *Bed) NetworkRestore(ctx context.Context, host string) error {
	h, err := b.lookup(host)
	if err != nil {
		return err
	}
	if err := os.Remove(h.stateFile("cut")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("restore network of host %q: %w", host, err)
	}
	if h.PoweredOn() {
		if err := b.setLink(ctx, h, true); err != nil {
			return fmt.Errorf("restore network of host %q: %w", host, err)
		}
	}
	b.log.Info("network restored", "node", host, "op", "restore")
	return nil
}

// NetworkOutage cuts the network of every host named, all at once (one
// ip process takes their ports on the bridge down), waits d and restores
// them all at once. It returns how long the outage lasted at most: from
// the start of the cut to the end of the restore. Cutting host by host
// with NetworkCut makes a longer outage than d for the first hosts cut,
// by the time the commands take (hundreds of milliseconds on a loaded
// machine).
func (b *Bed) NetworkOutage(ctx context.Context, d time.Duration, hosts ...string) (time.Duration, error) {
	var hs []*Host
	for _, name := range hosts {
		h, err := b.lookup(name)
		if err != nil {
			return 0, err
		}
		if h.NetworkCut() {
			return 0, fmt.Errorf("network outage: host %q is cut already", name)
		}
		if err := os.WriteFile(h.stateFile("cut"), nil, 0o644); err != nil {
			return 0, fmt.Errorf("cut network of host %q: %w", name, err)
		}
		hs = append(hs, h)
	}
	batch := func(state string) error {
		var sb strings.Builder
		for _, h := range hs {
			if state == "down" || h.PoweredOn() {
				fmt.Fprintf(&sb, "link set %s %s\n", h.Name, state)
			}
		}
		_, err := outputIn(ctx, sb.String(), "ip", "-n", b.BridgeNetns(), "-batch", "-")
		return err
	}
	start := time.Now()
	if err := batch("down"); err != nil {
		return 0, fmt.Errorf("network outage of %s: %w", strings.Join(hosts, ", "), err)
	}
	b.log.Info("network cut", "nodes", strings.Join(hosts, ","), "op", "cut")
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	for _, h := range hs {
		if err := os.Remove(h.stateFile("cut")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("restore network of host %q: %w", h.Name, err)
		}
	}
	if err := batch("up"); err != nil {
		return 0, fmt.Errorf("network outage of %s: restore: %w", strings.Join(hosts, ", "), err)
	}
	took := time.Since(start)
	b.log.Info("network restored", "nodes", strings.Join(hosts, ","), "op", "restore", "outage_at_most", took.Round(time.Millisecond))
	return took, ctx.Err()
}

// NetworkCut reports whether the host's network is cut.
func (h *Host) NetworkCut() bool { return fileExists(h.stateFile("cut")) }

// partChain is the iptables chain, in each host's namespace, holding the
// partition's rules.
const partChain = "HAVEN-PARTITION"

// Partition splits the hosts into groups that reach only each other, with
// iptables DROP rules inside each host's namespace (the root leg still
// reaches everyone). Every host must be in exactly one group. A partition
// replaces the previous one. It drops IPv4 only: the hosts' one IPv6
// address is link-local, which Haven does not use.
func (b *Bed) Partition(ctx context.Context, groups ...[]string) error {
	b.netMu.Lock()
	defer b.netMu.Unlock()
	groupOf := map[string]int{}
	for gi, g := range groups {
		for _, name := range g {
			h, err := b.lookup(name)
			if err != nil {
				return fmt.Errorf("partition: %w", err)
			}
			if _, dup := groupOf[h.Name]; dup {
				return fmt.Errorf("partition: host %q is in two groups", h.Name)
			}
			groupOf[h.Name] = gi
		}
	}
	for _, h := range b.hosts {
		if _, ok := groupOf[h.Name]; !ok {
			return fmt.Errorf("partition: host %q is in no group; name every host (%s)", h.Name, strings.Join(b.cfg.Hosts, ","))
		}
	}
	for _, h := range b.hosts {
		var rules [][]string
		for _, other := range b.hosts {
			if groupOf[other.Name] != groupOf[h.Name] {
				a := other.Addr.String()
				rules = append(rules, []string{"-A", partChain, "-s", a, "-j", "DROP"}, []string{"-A", partChain, "-d", a, "-j", "DROP"})
			}
		}
		if err := b.setPartitionRules(ctx, h, rules); err != nil {
			return fmt.Errorf("partition host %q: %w", h.Name, err)
		}
	}
	spec := FormatGroups(groups)
	if err := writeFileAtomic(filepath.Join(b.dir, "partition"), []byte(spec+"\n")); err != nil {
		return err
	}
	b.log.Info("network partitioned", "op", "partition", "groups", spec)
	return nil
}

// Heal removes the partition.
func (b *Bed) Heal(ctx context.Context) error {
	b.netMu.Lock()
	defer b.netMu.Unlock()
	for _, h := range b.hosts {
		if err := b.setPartitionRules(ctx, h, nil); err != nil {
			return fmt.Errorf("heal host %q: %w", h.Name, err)
		}
	}
	if err := os.Remove(filepath.Join(b.dir, "partition")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	b.log.Info("network healed", "op", "heal")
	return nil
}

// PartitionSpec returns the current partition as "h1,h2/h3", or "".
func (b *Bed) PartitionSpec() string {
	data, _ := os.ReadFile(filepath.Join(b.dir, "partition"))
	return strings.TrimSpace(string(data))
}

// setPartitionRules makes the host's partition chain hold exactly rules.
func (b *Bed) setPartitionRules(ctx context.Context, h *Host, rules [][]string) error {
	ipt := func(args ...string) error {
		return run(ctx, "nsenter", append([]string{"--net=/run/netns/" + h.Netns, "iptables", "-w"}, args...)...)
	}
	if ipt("-n", "-L", partChain) != nil {
		if err := ipt("-N", partChain); err != nil {
			return err
		}
		for _, c := range []string{"INPUT", "OUTPUT"} {
			if err := ipt("-I", c, "-j", partChain); err != nil {
				return err
			}
		}
	}
	if err := ipt("-F", partChain); err != nil {
		return err
	}
	for _, r := range rules {
		if err := ipt(r...); err != nil {
			return err
		}
	}
	return nil
}

// ParseGroups parses a partition spec such as "h1,h2/h3" into groups.
func ParseGroups(spec string) ([][]string, error) {
	var groups [][]string
	for _, g := range strings.Split(spec, "/") {
		var names []string
		for _, n := range strings.Split(g, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("partition spec %q has an empty group; write it like h1,h2/h3", spec)
		}
		groups = append(groups, names)
	}
	return groups, nil
}

// FormatGroups is the inverse of ParseGroups.
func FormatGroups(groups [][]string) string {
	parts := make([]string, len(groups))
	for i, g := range groups {
		parts[i] = strings.Join(g, ",")
	}
	return strings.Join(parts, "/")
}

// FenceDeviceFail makes the fence device of a host fail (every
// fence_testbed action for that port exits 1 without doing anything), or
// work again.
func (b *Bed) FenceDeviceFail(host string, fail bool) error {
	h, err := b.lookup(host)
	if err != nil {
		return err
	}
	f := h.stateFile("fence-fail")
	if fail {
		err = os.WriteFile(f, nil, 0o644)
	} else if err = os.Remove(f); errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("set fence device of host %q failing=%v: %w", host, fail, err)
	}
	b.log.Info("fence device", "node", host, "op", "fencefail", "failing", fail)
	return nil
}

// FenceDeviceFailing reports whether the host's fence device fails.
func (h *Host) FenceDeviceFailing() bool { return fileExists(h.stateFile("fence-fail")) }

// Shutdown shuts a host down gracefully through the Shutdown hook, then
// powers it off.
func (b *Bed) Shutdown(ctx context.Context, host string) error {
	h, err := b.lookup(host)
	if err != nil {
		return err
	}
	hook := b.getHooks().Shutdown
	if hook == nil {
		return fmt.Errorf("shut down host %q: no Shutdown hook set (Bed.SetHooks)", host)
	}
	if err := hook(ctx, h); err != nil {
		return fmt.Errorf("shut down host %q: %w", host, err)
	}
	return b.PowerOff(ctx, host)
}

// Maintenance puts a host into maintenance or takes it out, through the
// Maintenance hook.
func (b *Bed) Maintenance(ctx context.Context, host string, on bool) error {
	h, err := b.lookup(host)
	if err != nil {
		return err
	}
	hook := b.getHooks().Maintenance
	if hook == nil {
		return fmt.Errorf("maintenance of host %q: no Maintenance hook set (Bed.SetHooks)", host)
	}
	if err := hook(ctx, h, on); err != nil {
		return fmt.Errorf("maintenance of host %q (on=%v): %w", host, on, err)
	}
	return nil
}

// FenceDeviceParams returns the parameters of a fence device that fences
// this bed's hosts with fence_testbed: {"testbed_dir": b.Dir()}. A node's
// plug on that device is its host's name ("h2").
func (b *Bed) FenceDeviceParams() map[string]string {
	return map[string]string{"testbed_dir": b.dir}
}

// FenceAgentParams returns every key=value parameter fence_testbed needs to
// act on host, plug included (without action), for running it by hand.
func (b *Bed) FenceAgentParams(host string) map[string]string {
	return map[string]string{"plug": host, "testbed_dir": b.dir}
}

// FenceAgentPath finds scripts/fence_testbed of this module by walking up
// from the working directory to go.mod (tests run in their package's
// directory), or returns the path in $HAVEN_FENCE_TESTBED when set.
func FenceAgentPath() (string, error) {
	if p := os.Getenv("HAVEN_FENCE_TESTBED"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if fileExists(filepath.Join(dir, "go.mod")) {
			p := filepath.Join(dir, "scripts", "fence_testbed")
			if !fileExists(p) {
				return "", fmt.Errorf("fence agent %s missing", p)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find scripts/fence_testbed: no go.mod above the working directory; set HAVEN_FENCE_TESTBED")
		}
		dir = parent
	}
}

// HostStatus is one host's state, as status shows it.
type HostStatus struct {
	Name, Netns, Addr string
	PoweredOn         bool
	Boots             int
	NetworkCut        bool
	FenceFailing      bool
	Processes         []ProcRecord // recorded and running
	NetnsPIDs         int          // every process in the namespace
}

// Status returns every host's state.
func (b *Bed) Status() []HostStatus {
	var out []HostStatus
	for _, h := range b.hosts {
		pids, _ := h.PIDs()
		out = append(out, HostStatus{
			Name: h.Name, Netns: h.Netns, Addr: h.Addr.String(),
			PoweredOn: h.PoweredOn(), Boots: h.Boots(), NetworkCut: h.NetworkCut(), FenceFailing: h.FenceDeviceFailing(),
			Processes: h.Processes(), NetnsPIDs: len(pids),
		})
	}
	return out
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
