// Command testbed drives Haven's test bed (internal/testbed) by hand: bring
// up hosts as network namespaces, run things in them, inject faults, tear
// down. scripts/testbed.sh builds and runs it. See docs/testbed.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/haven-ha/haven/internal/testbed"
)

const usage = `Usage: testbed COMMAND [ARGS]   (bed: --bed ID, $HAVEN_TESTBED, or the only one up)

  up [N] [--leg] [--shared DIR]   build a bed of N hosts (default 3); --leg gives
                                  this machine an address on the bed's bridge
  down [--bed ID]                 kill the bed's processes, delete its namespaces
  list                            beds on this machine
  status                          hosts, addresses, power, network, processes
  exec H [--net-only] [-- ] CMD.. run a command in host H (interactive)
  start H [--role R] [--net-only] [--] CMD..
                                  start a background process in H (output in
                                  the host's dir); --role agent for agentkill
  poweroff H | poweron H          pull / restore H's plug (kills all its processes)
  agentkill H                     SIGKILL H's agent (processes with role agent)
  libvirt H                       boot H's own libvirtd (and virtlogd), listening on
                                  H's address; after libvirtdkill, restart libvirtd
  libvirtdkill H                  SIGKILL H's libvirtd (its guests keep running)
  cut H | restore H               take H's link down / up
  partition h1,h2/h3 | heal       split the hosts into groups / undo
  fencefail H on|off              make H's fence device fail / work
  fence-params H                  the fence_testbed parameters for H
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd := args[0]
	flags, pos := splitArgs(args[1:])
	err := dispatch(ctx, cmd, flags, pos, stdout)
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintf(stderr, "testbed %s: %v\n", cmd, err)
		return 1
	}
}

type exitError struct{ code int }

func (e *exitError) Error() string { return "exit " + strconv.Itoa(e.code) }

// splitArgs separates --flag[=value] words (a flag's value may also be the
// next word, for the flags that take one) from positional words; everything
// after "--" is positional.
func splitArgs(args []string) (map[string]string, []string) {
	takesValue := map[string]bool{"bed": true, "shared": true, "role": true}
	flags := map[string]string{}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(pos) > 0 && !strings.HasPrefix(a, "--") {
			// After the first positional of exec/start, the command's own
			// words follow; flags are only recognised before it or with --.
			pos = append(pos, a)
			continue
		}
		if !strings.HasPrefix(a, "--") {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !hasVal && takesValue[name] && i+1 < len(args) {
			i++
			val = args[i]
		}
		flags[name] = val
	}
	return flags, pos
}

func openBed(flags map[string]string) (*testbed.Bed, error) {
	id := flags["bed"]
	if id == "" {
		id = os.Getenv("HAVEN_TESTBED")
	}
	if id == "" {
		ids := testbed.List("")
		switch len(ids) {
		case 0:
			return nil, errors.New("no test bed is up: run scripts/testbed.sh up")
		case 1:
			id = ids[0]
		default:
			return nil, fmt.Errorf("several test beds are up (%s): choose one with --bed ID or $HAVEN_TESTBED", strings.Join(ids, ", "))
		}
	}
	return testbed.Open(id)
}

func need(pos []string, n int, what string) error {
	if len(pos) < n {
		return fmt.Errorf("missing %s (see testbed --help)", what)
	}
	return nil
}

func dispatch(ctx context.Context, cmd string, flags map[string]string, pos []string, out io.Writer) error {
	if cmd == "up" {
		n := 3
		if len(pos) > 0 {
			v, err := strconv.Atoi(pos[0])
			if err != nil {
				return fmt.Errorf("host count %q is not a number", pos[0])
			}
			n = v
		}
		_, leg := flags["leg"]
		b, err := testbed.New(ctx, testbed.Options{Hosts: n, Leg: leg, SharedDir: flags["shared"], Persistent: true})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "test bed %s up: dir %s, shared %s\n", b.ID(), b.Dir(), b.SharedDir())
		return printStatus(b, out)
	}
	if cmd == "list" {
		for _, id := range testbed.List("") {
			b, err := testbed.Open(id)
			if err != nil {
				continue
			}
			c := b.Config()
			kind := "test (owner pid " + strconv.Itoa(c.OwnerPID) + ")"
			if c.Persistent {
				kind = "persistent"
			}
			fmt.Fprintf(out, "%s\t%d hosts\t%s\t%s\tcreated %s\n", id, len(c.Hosts), c.Subnet, kind, c.Created)
		}
		return nil
	}
	b, err := openBed(flags)
	if err != nil {
		return err
	}
	host := func() (string, error) {
		if err := need(pos, 1, "host name"); err != nil {
			return "", err
		}
		if b.Host(pos[0]) == nil {
			return "", fmt.Errorf("test bed %s has no host %q", b.ID(), pos[0])
		}
		return pos[0], nil
	}
	switch cmd {
	case "down":
		if err := b.Destroy(ctx); err != nil {
			return err
		}
		fmt.Fprintf(out, "test bed %s down\n", b.ID())
		return nil
	case "status":
		return printStatus(b, out)
	case "fence-params":
		h, err := host()
		if err != nil {
			return err
		}
		p := b.FenceAgentParams(h)
		fmt.Fprintf(out, "plug=%s\ntestbed_dir=%s\n", p["plug"], p["testbed_dir"])
		return nil
	case "exec", "start":
		h, err := host()
		if err != nil {
			return err
		}
		if err := need(pos, 2, "command"); err != nil {
			return err
		}
		s := testbed.Spec{Path: pos[1], Args: pos[2:], Role: flags["role"]}
		if _, ok := flags["net-only"]; ok {
			s.Mode = testbed.NetOnly
		}
		hh := b.Host(h)
		if cmd == "start" {
			logPath := filepath.Join(hh.Dir, "..", fmt.Sprintf("%s.log", filepath.Base(s.Path)))
			f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return err
			}
			defer f.Close()
			s.Stdout, s.Stderr = f, f
			pid, err := hh.StartDetached(s)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "started %s on %s: pid %d, log %s\n", s.Path, h, pid, filepath.Clean(logPath))
			return nil
		}
		s.Stdin, s.Stdout, s.Stderr = os.Stdin, out, os.Stderr
		c := hh.Command(context.Background(), s)
		// An interactive command keeps the terminal: same process group.
		c.SysProcAttr = nil
		if err := c.Run(); err != nil {
			var xe interface{ ExitCode() int }
			if errors.As(err, &xe) && xe.ExitCode() > 0 {
				return &exitError{xe.ExitCode()}
			}
			return err
		}
		return nil
	case "poweroff":
		h, err := host()
		if err != nil {
			return err
		}
		return b.PowerOff(ctx, h)
	case "poweron":
		h, err := host()
		if err != nil {
			return err
		}
		return b.PowerOn(ctx, h)
	case "agentkill":
		h, err := host()
		if err != nil {
			return err
		}
		return b.AgentKill(ctx, h)
	case "libvirt":
		h, err := host()
		if err != nil {
			return err
		}
		hh := b.Host(h)
		virtlogd, libvirtd := false, false
		for _, r := range hh.Processes() {
			virtlogd = virtlogd || r.Role == testbed.RoleVirtlogd
			libvirtd = libvirtd || r.Role == testbed.RoleLibvirtd
		}
		switch {
		case libvirtd:
			return fmt.Errorf("libvirtd already runs on %s (socket %s)", h, hh.LibvirtSocket())
		case virtlogd:
			err = hh.RestartLibvirtd(ctx, true)
		default:
			err = hh.StartLibvirt(ctx, true)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "libvirt up on %s: socket %s, migrations to %s\n", h, hh.LibvirtSocket(), hh.LibvirtURI())
		return nil
	case "libvirtdkill":
		h, err := host()
		if err != nil {
			return err
		}
		return b.LibvirtdKill(ctx, h)
	case "cut":
		h, err := host()
		if err != nil {
			return err
		}
		return b.NetworkCut(ctx, h)
	case "restore":
		h, err := host()
		if err != nil {
			return err
		}
		return b.NetworkRestore(ctx, h)
	case "partition":
		if err := need(pos, 1, "groups, such as h1,h2/h3"); err != nil {
			return err
		}
		groups, err := testbed.ParseGroups(pos[0])
		if err != nil {
			return err
		}
		return b.Partition(ctx, groups...)
	case "heal":
		return b.Heal(ctx)
	case "fencefail":
		h, err := host()
		if err != nil {
			return err
		}
		if err := need(pos, 2, "on or off"); err != nil {
			return err
		}
		switch pos[1] {
		case "on":
			return b.FenceDeviceFail(h, true)
		case "off":
			return b.FenceDeviceFail(h, false)
		}
		return fmt.Errorf("fencefail takes on or off, not %q", pos[1])
	}
	return fmt.Errorf("unknown command %q (see testbed --help)", cmd)
}

func printStatus(b *testbed.Bed, out io.Writer) error {
	c := b.Config()
	leg := "none (unreachable route " + c.Subnet + ")"
	if a, ok := b.LegAddr(); ok {
		leg = fmt.Sprintf("%s on %s", a, b.LegDev())
	}
	part := b.PartitionSpec()
	if part == "" {
		part = "none"
	}
	fmt.Fprintf(out, "bed %s  dir %s  subnet %s  leg %s  partition %s\n", c.ID, b.Dir(), c.Subnet, leg, part)
	fmt.Fprintf(out, "%-4s %-12s %-14s %-5s %-5s %-7s %-6s %s\n", "HOST", "NETNS", "ADDR", "POWER", "BOOTS", "NETWORK", "FENCE", "PROCESSES")
	for _, h := range b.Status() {
		power, netw, fence := "on", "up", "ok"
		if !h.PoweredOn {
			power = "off"
		}
		if !h.PoweredOn {
			netw = "down"
		}
		if h.NetworkCut {
			netw = "cut"
		}
		if h.FenceFailing {
			fence = "fails"
		}
		var procs []string
		for _, p := range h.Processes {
			role := p.Role
			if role == "" {
				role = "-"
			}
			procs = append(procs, fmt.Sprintf("%d(%s)", p.PID, role))
		}
		fmt.Fprintf(out, "%-4s %-12s %-14s %-5s %-5d %-7s %-6s %d in netns; recorded: %s\n", h.Name, h.Netns, h.Addr, power, h.Boots, netw, fence, h.NetnsPIDs, strings.Join(procs, " "))
	}
	return nil
}
