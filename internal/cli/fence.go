package cli

// `haven fence ...`, `haven node fence` and `haven policy ...`: the fence
// devices and levels (secrets never shown), testing them, fencing a host
// by hand, and the cluster policy (fencing mode, shutdown policy).

import (
	"github.com/spf13/pflag"

	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/fence"
	"github.com/haven-ha/haven/internal/model"
)

func init() {
	Register(&Command{Path: "fence show", Short: "show the fence devices and each node's levels (secrets redacted)", Flags: cmdFenceShow})
	Register(&Command{Path: "fence set", Args: "FILE", Example: "haven fence set fencing.yaml\nhaven fence set - < fencing.json", Short: "replace the fencing configuration from a JSON or YAML file (- for stdin)", Flags: cmdFenceSet})
	Register(&Command{Path: "fence test", Args: "NODE", Example: "haven fence test h2", Short: "ask each fence device of NODE for its power status, without fencing", Flags: cmdFenceTest})
	Register(&Command{Path: "node fence", Args: "NAME --yes", Example: "haven node fence h2 --yes", Short: "fence (power off) a host now through its fence devices", Flags: cmdNodeFence})
	Register(&Command{Path: "node confirm-off", Args: "NAME --yes", Example: "haven node confirm-off h2 --yes", Short: "tell the manager a failed host is powered off (its fence device fails): its guests recover now", Flags: cmdNodeConfirmOff})
	Register(&Command{Path: "policy show", Short: "show the cluster policy: fencing mode, shutdown policy, quorum loss, preemption", Flags: cmdPolicyShow})
	Register(&Command{Path: "policy set", Example: "haven policy set --fencing watchdog\nhaven policy set --shutdown-policy stop\nhaven policy set --quorum-loss freeze --preemption on\nhaven policy set --hold on   # the manager takes no action until --hold off", Short: "change the cluster policy", Flags: cmdPolicySet})
}

var cmdFenceShow = getCmd((*client.Client).FenceConfig,
	func(w io.Writer, fc *fence.Config) error {
		if len(fc.Devices) == 0 && len(fc.Levels) == 0 {
			fmt.Fprintln(w, "No fencing configured. Write a configuration and load it with `haven fence set FILE` (see docs/fencing.md).")
			return nil
		}
		action := string(fc.Action)
		if action == "" {
			action = string(fence.ActionOff)
		}
		fmt.Fprintf(w, "Action: %s\n\n", action)
		tw := newTable(w, "DEVICE", "AGENT", "PARAMS", "PLUGS")
		for _, d := range fc.Devices {
			tw.row(d.Name, d.Agent, kvList(d.Params), kvList(d.Plugs))
		}
		if err := tw.flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
		tw = newTable(w, "NODE", "LEVEL", "DEVICES")
		nodes := make([]string, 0, len(fc.Levels))
		for n := range fc.Levels {
			nodes = append(nodes, n)
		}
		sort.Strings(nodes)
		for _, n := range nodes {
			for i, l := range fc.Levels[n] {
				tw.row(n, strconv.Itoa(i+1), strings.Join(l.Devices, " + "))
			}
		}
		return tw.flush()
	})

func kvList(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, k+"="+m[k])
	}
	return strings.Join(out, ",")
}

// fenceBody reads a fencing configuration in JSON or YAML and returns it
// as JSON, with device timeouts given as durations ("30s") turned into
// the API's nanoseconds.
func fenceBody(data []byte) (json.RawMessage, error) {
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not JSON or YAML: %w", err)
	}
	m, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("want an object with devices and levels")
	}
	if devs, ok := m["devices"].([]any); ok {
		for i, d := range devs {
			dm, ok := d.(map[string]any)
			if !ok {
				continue
			}
			if s, ok := dm["timeout"].(string); ok {
				t, err := time.ParseDuration(s)
				if err != nil {
					return nil, fmt.Errorf("devices[%d].timeout %q: give a duration such as 30s", i, s)
				}
				dm["timeout"] = int64(t)
			}
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return b, nil
}

func cmdFenceSet(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	noCheck := fs.Bool("no-check", false, "store without checking the devices against their agents' metadata (for agents not installed on the host answering)")
	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		if len(pos) != 1 {
			return Usagef("give one configuration file (- for stdin)")
		}
		data, err := readInput(env, pos[0])
		if err != nil {
			return err
		}
		body, err := fenceBody(data)
		if err != nil {
			return Usagef("%s: %v", pos[0], err)
		}
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
		set := c.SetFenceConfigValidated
		if *noCheck {
			set = c.SetFenceConfig
		}
		fc, err := set(ctx, body)
		if err != nil {
			return err
		}
		return cf.printf(env, fc, "fencing configuration stored: %d devices, levels for %d nodes; check each node with `haven fence test NODE`", len(fc.Devices), len(fc.Levels))
	}
}

func cmdFenceTest(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)

	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		c, err := cf.connect(env, args, 1, "one node name")
		if err != nil {
			return err
		}
		defer c.Close()
		out, err := c.FenceTest(ctx, pos[0])
		if err != nil {
			return err
		}
		return printFenceOutcome(env, cf, "fence test", out, out.OK, out.Error, func(w io.Writer) error {
			return writeTable(w, out.Result.Devices, []string{"LEVEL", "DEVICE", "POWER", "OK", "TOOK", "ERROR"}, func(d fence.DeviceTest) []string {
				return []string{strconv.Itoa(d.Level), d.Device, d.Power, strconv.FormatBool(d.OK), d.Duration.Round(time.Millisecond).String(), d.Error}
			})
		}, func(w io.Writer) {
			fmt.Fprintf(w, "every fence device of %s answered\n", pos[0])
		})
	}
}

func cmdNodeFence(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	yes := fs.Bool("yes", false, "confirm: the host is powered off at once, with every guest on it")
	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		c, err := oneNodeWithYes(ctx, env, cf, args, yes, func(node string) string {
			return fmt.Sprintf("fencing powers %s off at once, with every guest on it: add --yes to go ahead", node)
		})
		if err != nil {
			return err
		}
		defer c.Close()
		out, err := c.FenceNode(ctx, pos[0])
		if err != nil {
			return err
		}
		return printFenceOutcome(env, cf, "node fence", out, out.OK, out.Error, func(w io.Writer) error {
			return writeTable(w, out.Result.Attempts, []string{"LEVEL", "DEVICE", "ACTION", "OK", "TOOK", "ERROR"}, func(a fence.Attempt) []string {
				return []string{strconv.Itoa(a.Level), a.Device, a.Action, strconv.FormatBool(a.OK), a.Duration.Round(time.Millisecond).String(), a.Error}
			})
		}, func(w io.Writer) {
			how := "powered off"
			if out.Result.Action == fence.ActionReboot {
				how = "rebooted"
			}
			confirmed := ""
			if out.Result.Confirmed {
				confirmed = ", confirmed off"
			}
			fmt.Fprintf(w, "node %s fenced: %s by level %d (%s)%s\n", pos[0], how, out.Result.Level, strings.Join(out.Result.Devices, " + "), confirmed)
			if out.Told != "" {
				fmt.Fprintf(w, "the manager was waiting for this fence: it recovers %s's guests now (command %s)\n", pos[0], out.Told)
			}
		})
	}
}

// printFenceOutcome prints the answer of a fence or a fence test: as JSON,
// or as the table of devices and, when it worked, the summary. When it
// failed, why is said on stderr and the command exits 1.
func printFenceOutcome(env *Env, cf *clientFlags, cmd string, out any, ok bool, failure string, table func(io.Writer) error, summary func(io.Writer)) error {
	if err := cf.print(env, out, table); err != nil {
		return err
	}
	if !ok {
		fmt.Fprintf(env.Stderr, "haven %s: %s\n", cmd, failure)
		return &ExitError{Code: 1}
	}
	if cf.output != "json" {
		summary(env.Stdout)
	}
	return nil
}

// oneNodeWithYes checks the arguments of a command that acts on one node
// and does harm unless meant: the node must exist (checked first, so a
// typo is not met with a warning), and without --yes it refuses, saying
// what would happen (risk). It returns the open client.
func oneNodeWithYes(ctx context.Context, env *Env, cf *clientFlags, pos []string, yes *bool, risk func(node string) string) (*client.Client, error) {
	c, err := cf.connect(env, pos, 1, "one node name")
	if err != nil {
		return nil, err
	}
	if err := checkNode(ctx, c, pos[0]); err != nil {
		c.Close()
		return nil, err
	}
	if !*yes {
		c.Close()
		return nil, Usagef("%s", risk(pos[0]))
	}
	return c, nil
}

// checkNode fails with the cluster's node names when name is not one.
func checkNode(ctx context.Context, c *client.Client, name string) error {
	ns, err := c.Nodes(ctx)
	if err != nil {
		return err
	}
	var names []string
	for _, n := range ns {
		if n.Name == name {
			return nil
		}
		names = append(names, n.Name)
	}
	return fmt.Errorf("no node named %q in this cluster (its nodes: %s)", name, strings.Join(names, ", "))
}

func cmdNodeConfirmOff(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	yes := fs.Bool("yes", false, "confirm: you have checked that the host is powered off")
	wait := fs.Duration("wait", time.Minute, "how long to wait for the outcome (0: only for the manager to accept the command)")
	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		c, err := oneNodeWithYes(ctx, env, cf, args, yes, func(node string) string {
			return fmt.Sprintf("the manager will start %s's guests elsewhere at once: if %s still runs them, they run twice and their disks are corrupted. Check that it is powered off (its power light, its PDU outlet), then add --yes", node, node)
		})
		if err != nil {
			return err
		}
		defer c.Close()
		res, err := c.ConfirmOff(ctx, pos[0])
		if err != nil {
			return err
		}
		return finishCommand(ctx, env, c, cf, res, *wait)
	}
}

var cmdPolicyShow = getCmd((*client.Client).Policy,
	func(w io.Writer, p *cluster.Policy) error {
		fmt.Fprintf(w, "Fencing:         %s\nShutdown policy: %s\nQuorum loss:     %s\nPreemption:      %s\n", p.Fencing, p.ShutdownPolicy, p.QuorumLoss, onOff(p.Preemption))
		fmt.Fprintf(w, "Admission:       %s\n", p.Reserve)
		if b := p.Balance; b.On() {
			b = b.WithDefaults()
			fmt.Fprintf(w, "Rebalancing:     %s, threshold %d points, %d move(s) at once, cool-down %s\n", b.Mode, b.Threshold, b.MaxMoves, b.Cooldown)
		} else {
			fmt.Fprintf(w, "Rebalancing:     off\n")
		}
		if p.Hold {
			fmt.Fprintf(w, "Hold:            ON: the manager takes no action until `haven policy set --hold off`\n")
		}
		c := p.EffectiveCapacity()
		if c.CPUsOn() {
			fmt.Fprintf(w, "vCPUs:           %v per host CPU, %d reserved per host (capacity = cpus × %v - %d)\n", c.CPUOvercommit, c.CPUReserve, c.CPUOvercommit, c.CPUReserve)
		} else {
			fmt.Fprintf(w, "vCPUs:           not counted\n")
		}
		fmt.Fprintf(w, "Host memory:     %s reserved per host, %s per guest for QEMU\n", api.FormatSize(c.MemoryReserve), api.FormatSize(c.GuestOverhead))
		m := c.CPUModel
		if m == "" || m == model.CPUModelAuto {
			m = "auto (the newest x86-64 level every host offers)"
		}
		fmt.Fprintf(w, "CPU model:       %s\n", m)
		printRules(w, p.Rules)
		return nil
	})

func cmdPolicySet(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	fencing := fs.String("fencing", "", "agent (fence devices) or watchdog (hosts self-fence)")
	shutdown := fs.String("shutdown-policy", "", "what a host's graceful shutdown does to its guests: migrate, stop or freeze")
	quorumLoss := fs.String("quorum-loss", "", "what a host cut off from the quorate side does with its guests: stop (self-fence) or freeze (keep them; needs fencing agent)")
	preemption := fs.String("preemption", "", "on: a guest short of room may stop guests of lower priority; off")
	balance := fs.String("balance", "", "rebalancing: off, manual (propose moves) or auto (live-migrate to even out memory use)")
	threshold := fs.Int("balance-threshold", 0, "rebalance while hosts' memory use differs by more than this many percentage points (default 20)")
	reserve := fs.String("reserve", "", "admission control: off, \"hosts N\" (room to restart every guest after losing N hosts) or \"percent P\"")
	hold := fs.String("hold", "", "on: put the whole cluster on hold, the manager takes no action (no fence, start, stop or move) and cut-off hosts keep their guests, for work on the cluster itself such as moving its store (needs fencing agent); off: end it")
	overcommit := fs.String("cpu-overcommit", "", "guest vCPUs per host CPU, such as 4 or 1.5; off: vCPUs are not counted (default 4)")
	cpuReserve := fs.Int("cpu-reserve", -1, "vCPUs of each host's capacity kept for the host (default 1)")
	memReserve := fs.String("memory-reserve", "", "memory of each host kept for its OS, such as 1GiB (default 1GiB; 0 for none)")
	overhead := fs.String("guest-overhead", "", "memory counted per guest for QEMU itself, such as 64MiB (default 64MiB; 0 for none)")
	cpuModel := fs.String("cpu-model", "", "the cluster's CPU model: auto (the newest x86-64 level every host offers), host, or a model such as x86-64-v2")
	return func(ctx context.Context, env *Env, args []string) error {
		if err := wantN(args, 0, ""); err != nil {
			return err
		}
		body := map[string]any{}
		if *fencing != "" {
			body["fencing"] = *fencing
		}
		if *shutdown != "" {
			body["shutdown_policy"] = *shutdown
		}
		if *quorumLoss != "" {
			body["quorum_loss"] = *quorumLoss
		}
		switch *hold {
		case "":
		case "on", "off":
			body["hold"] = *hold == "on"
		default:
			return Usagef("--hold %q: give on or off", *hold)
		}
		switch *preemption {
		case "":
		case "on":
			body["preemption"] = true
		case "off":
			body["preemption"] = false
		default:
			return Usagef("--preemption %q: give on or off", *preemption)
		}
		if *balance != "" || *threshold != 0 {
			p, err := func() (*cluster.Policy, error) {
				c, err := cf.client(env)
				if err != nil {
					return nil, err
				}
				defer c.Close()
				return c.Policy(ctx)
			}()
			if err != nil {
				return err
			}
			b := p.Balance
			switch *balance {
			case "":
			case "off", "manual", "auto":
				b.Mode = model.BalanceMode(*balance)
			default:
				return Usagef("--balance %q: give off, manual or auto", *balance)
			}
			if *threshold != 0 {
				b.Threshold = *threshold
			}
			body["balance"] = b
		}
		if *reserve != "" {
			r, err := parseReserve(*reserve)
			if err != nil {
				return err
			}
			body["reserve"] = r
		}
		capa := map[string]any{}
		if *overcommit != "" {
			v := 0.0
			if *overcommit != "off" {
				f, err := strconv.ParseFloat(*overcommit, 64)
				if err != nil || f <= 0 {
					return Usagef("--cpu-overcommit %q: give a ratio such as 4 or 1.5, or off", *overcommit)
				}
				v = f
			}
			capa["cpu_overcommit"] = v
		}
		if *cpuReserve >= 0 {
			capa["cpu_reserve"] = *cpuReserve
		}
		for flag, v := range map[string]string{"memory_reserve": *memReserve, "guest_overhead": *overhead} {
			if v == "" {
				continue
			}
			size := int64(0)
			if v != "0" {
				n, err := api.ParseSize(v)
				if err != nil {
					return Usagef("--%s %q: %v", strings.ReplaceAll(flag, "_", "-"), v, err)
				}
				size = n
			}
			capa[flag] = size
		}
		if *cpuModel != "" {
			capa["cpu_model"] = *cpuModel
		}
		if len(capa) > 0 {
			body["capacity"] = capa
		}
		if len(body) == 0 {
			return Usagef("nothing to change: give --fencing, --shutdown-policy, --quorum-loss, --preemption, --reserve, --balance, --hold or a capacity flag (--cpu-overcommit, --cpu-reserve, --memory-reserve, --guest-overhead, --cpu-model)")
		}
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
		p, err := c.SetPolicy(ctx, body)
		if err != nil {
			return err
		}
		msg := "policy set: fencing %s, shutdown policy %s, quorum loss %s, preemption %s"
		if p.Hold {
			msg += "\nthe cluster is ON HOLD: the manager takes no action until `haven policy set --hold off`"
		}
		return cf.printf(env, p, msg, p.Fencing, p.ShutdownPolicy, p.QuorumLoss, onOff(p.Preemption))
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
