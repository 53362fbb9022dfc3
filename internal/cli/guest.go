package cli

// `haven guest ...`: guests under cluster control, through the API only.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/spf13/pflag"
)

func init() {
	Register(&Command{Path: "guest list", Example: "haven guest list\nhaven guest list -o json", Short: "list guests with their state and node", Flags: cmdGuestList})
	Register(&Command{Path: "guest show", Args: "NAME", Example: "haven guest show web1", Complete: completeGuestThenNode, Short: "show a guest: policy, definition, state, counts, history", Flags: cmdGuestShow})
	Register(&Command{Path: "guest create", Args: "NAME", Example: "haven guest create web1 --memory 2GiB --vcpus 2 --disk /srv/vm/web1.qcow2 --nic bridge=br0\nhaven guest create web2 --disk pool=shared,volume=web2 --domain web --recovery relocate\nhaven guest create -f web3.json", Short: "put a new guest under cluster control", Flags: cmdGuestCreate})
	Register(&Command{Path: "guest import", Args: "FILE", Example: "virsh dumpxml web1 > web1.xml && haven guest import web1.xml\nhaven guest import /etc/xen/db1.cfg --format xen --name db1", Short: "create a guest from a libvirt domain XML or a Xen config file", Flags: cmdGuestImport})
	Register(&Command{Path: "guest edit", Args: "NAME", Example: "haven guest edit web1 --memory 4GiB\nhaven guest edit web1 --vcpus 4 --rev 17", Complete: completeGuestThenNode, Short: "change a guest's policy or definition (takes effect on its next start)", Flags: cmdGuestEdit})
	Register(&Command{Path: "guest delete", Args: "NAME", Example: "haven guest delete web1", Complete: completeGuestThenNode, Short: "remove a stopped or disabled guest from cluster control", Flags: cmdGuestDelete})
	for _, c := range []struct{ kind, args, short, example string }{
		{"start", "NAME", "start a guest (clusvcadm -e)", "haven guest start web1\nhaven guest start web1 --wait 2m   # until it runs, or why it failed"},
		{"stop", "NAME", "stop a guest; it stays stopped until started", "haven guest stop web1"},
		{"disable", "NAME", "stop a guest and keep the manager from starting it (clusvcadm -d)", "haven guest disable web1"},
		{"migrate", "NAME NODE", "live-migrate a running guest to NODE (clusvcadm -M)", "haven guest migrate web1 h3\nhaven guest migrate web1 h3 --wait 5m"},
		{"relocate", "NAME NODE", "stop a guest and start it on NODE (clusvcadm -r)", "haven guest relocate web1 h3"},
	} {
		Register(&Command{Path: "guest " + c.kind, Args: c.args, Short: c.short, Example: c.example, Flags: guestCommandFlags(c.kind), Complete: completeGuestThenNode})
	}
}

// guestFlags are the flags of guest create, import and edit. Only the
// flags given end up in the request body.
type guestFlags struct {
	memory, domain, recovery, window, state, node, kernel, initrd, cmdline, serial string
	vcpus, restarts, relocations                                                   int
	migratable                                                                     bool
	disks, nics                                                                    listFlag
	noDisks, noNICs                                                                bool
}

func (g *guestFlags) register(fs *pflag.FlagSet, create bool) {
	fs.StringVar(&g.memory, "memory", "", "memory, such as 512MiB or 2GiB (default 1GiB)")
	fs.IntVar(&g.vcpus, "vcpus", 0, "virtual CPUs (default 1)")
	fs.StringVar(&g.domain, "domain", "", "failover domain (empty: any host)")
	fs.StringVar(&g.recovery, "recovery", "", "after a crash: restart, relocate or disable (default restart)")
	fs.IntVar(&g.restarts, "max-restarts", 0, "restarts on the same host within the window before relocating (default 1)")
	fs.StringVar(&g.window, "restart-window", "", "window for max-restarts, such as 10m (default 10m)")
	fs.IntVar(&g.relocations, "max-relocations", 0, "relocations within the window before giving up (default 1)")
	fs.BoolVar(&g.migratable, "migratable", true, "may be live-migrated (--migratable=false to relocate instead)")
	fs.Var(&g.disks, "disk", "disk: PATH[,format=qcow2][,bus=virtio][,readonly] or pool=P,volume=V[,...] (repeat for more)")
	fs.Var(&g.nics, "nic", "interface: bridge=BR[,mac=MAC][,model=virtio] or user (repeat for more)")
	fs.StringVar(&g.kernel, "kernel", "", "boot this kernel instead of the first disk")
	fs.StringVar(&g.initrd, "initrd", "", "initrd for --kernel")
	fs.StringVar(&g.cmdline, "cmdline", "", "kernel command line for --kernel")
	fs.StringVar(&g.serial, "serial-log", "", "file the guest's first serial port is written to")
	if create {
		fs.StringVar(&g.state, "state", "", "started, stopped or disabled (default started)")
		fs.StringVar(&g.node, "node", "", "host to place it on first (default: the manager chooses)")
	} else {
		fs.BoolVar(&g.noDisks, "no-disks", false, "remove every disk")
		fs.BoolVar(&g.noNICs, "no-nics", false, "remove every interface")
	}
}

// body returns the request fields for the flags given.
func (g *guestFlags) body(fs *pflag.FlagSet) (map[string]any, error) {
	set := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { set[f.Name] = true })
	b := map[string]any{}
	if set["memory"] {
		n, err := api.ParseSize(g.memory)
		if err != nil {
			return nil, Usagef("--memory: %v", err)
		}
		b["memory"] = n
	}
	if set["restart-window"] {
		d, err := time.ParseDuration(g.window)
		if err != nil {
			return nil, Usagef("--restart-window %q: give a duration such as 10m", g.window)
		}
		b["restart_window"] = d.String()
	}
	for flagName, field := range map[string]string{"domain": "domain", "recovery": "recovery", "state": "state", "node": "node", "serial-log": "serial_log"} {
		if set[flagName] {
			b[field] = fs.Lookup(flagName).Value.String()
		}
	}
	for flagName, field := range map[string]string{"vcpus": "vcpus", "max-restarts": "max_restarts", "max-relocations": "max_relocations"} {
		if set[flagName] {
			n, _ := strconv.Atoi(fs.Lookup(flagName).Value.String())
			b[field] = n
		}
	}
	if set["migratable"] {
		b["migratable"] = g.migratable
	}
	if len(g.disks) > 0 || g.noDisks {
		disks := []map[string]any{}
		for _, d := range g.disks {
			m, err := parseKV(d, "path", "disk", map[string]bool{"path": true, "pool": true, "volume": true, "format": true, "bus": true, "readonly": true})
			if err != nil {
				return nil, err
			}
			disks = append(disks, m)
		}
		b["disks"] = disks
	}
	if len(g.nics) > 0 || g.noNICs {
		nics := []map[string]any{}
		for _, n := range g.nics {
			m, err := parseKV(n, "bridge", "nic", map[string]bool{"bridge": true, "user": true, "mac": true, "model": true})
			if err != nil {
				return nil, err
			}
			if m["bridge"] == "user" {
				delete(m, "bridge")
				m["user"] = true
			}
			nics = append(nics, m)
		}
		b["nics"] = nics
	}
	if set["kernel"] || set["initrd"] || set["cmdline"] {
		b["boot"] = map[string]any{"kernel": g.kernel, "initrd": g.initrd, "cmdline": g.cmdline}
	}
	return b, nil
}

// parseKV reads "a=1,b=2,flag" ("x" alone is first=x); boolean keys
// (readonly, user) take no value.
func parseKV(s, first, what string, keys map[string]bool) (map[string]any, error) {
	m := map[string]any{}
	for i, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		switch {
		case !ok && (k == "readonly" || k == "user"):
			m[k] = true
			continue
		case !ok && i == 0:
			k, v = first, part
		case !ok:
			return nil, Usagef("--%s %q: %q is not KEY=VALUE", what, s, part)
		}
		if !keys[k] {
			return nil, Usagef("--%s %q: unknown key %q", what, s, k)
		}
		m[k] = v
	}
	return m, nil
}

// readInput reads a file, or stdin for "-".
func readInput(env *Env, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(io.LimitReader(env.Stdin, api.MaxBodyBytes+1))
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}

func cmdGuestList(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)

	return func(ctx context.Context, env *Env, args []string) error {
		c, err := cf.connect(env, args, 0, "")
		if err != nil {
			return err
		}
		defer c.Close()
		gs, err := c.Guests(ctx)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, gs)
		}
		tw := newTable(env.Stdout, "NAME", "STATE", "NODE", "DESIRED", "DOMAIN", "MEMORY", "VCPUS")
		for _, g := range gs {
			tw.row(g.Name, g.State, g.Node, string(g.Desired), g.Domain, api.FormatSize(g.Memory), strconv.Itoa(g.VCPUs))
		}
		return tw.flush()
	}
}

func cmdGuestShow(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)

	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		c, err := cf.connect(env, args, 1, "one guest name")
		if err != nil {
			return err
		}
		defer c.Close()
		g, err := c.Guest(ctx, pos[0])
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, g)
		}
		printGuest(env.Stdout, g)
		return nil
	}
}

func printGuest(w io.Writer, g *api.GuestInfo) {
	s, d, rt := g.Spec, g.Definition, g.Runtime
	state := rt.State
	if rt.Node != "" {
		state += " on " + rt.Node
	}
	if rt.Running {
		state += " (running"
		if !rt.RunningSince.IsZero() {
			state += " since " + fmtTime(rt.RunningSince)
		}
		state += ")"
	}
	if rt.Op != nil {
		state += fmt.Sprintf("; %s in progress on %s", rt.Op.Kind, rt.Op.Node)
	}
	fmt.Fprintf(w, "Guest %s\n", g.Name)
	fmt.Fprintf(w, "  State:       %s\n", state)
	fmt.Fprintf(w, "  Desired:     %s\n", s.State)
	fmt.Fprintf(w, "  Size:        %s, %d vCPUs\n", api.FormatSize(s.Memory), s.CPUs)
	dom := s.Domain
	if dom == "" {
		dom = "(none: any host)"
	}
	fmt.Fprintf(w, "  Domain:      %s\n", dom)
	mig := "migratable"
	if !s.Migratable {
		mig = "not migratable (moves by relocation)"
	}
	fmt.Fprintf(w, "  Recovery:    %s; max %d restarts in %s, max %d relocations; %s\n", s.Recovery, s.MaxRestarts, s.RestartWindow, s.MaxRelocations, mig)
	fmt.Fprintf(w, "  Counts:      %d restarts, %d moves\n", rt.Restarts, rt.Moves)
	for i, k := range d.Disks {
		where := k.Path
		if where == "" {
			where = k.Pool + "/" + k.Volume
		}
		var attrs []string
		for _, a := range []string{k.Format, k.Bus} {
			if a != "" {
				attrs = append(attrs, a)
			}
		}
		if k.ReadOnly {
			attrs = append(attrs, "read-only")
		}
		fmt.Fprintf(w, "  Disk %d:      %s %s\n", i+1, where, paren(strings.Join(attrs, ", ")))
	}
	for i, n := range d.NICs {
		where := "bridge " + n.Bridge
		if n.User {
			where = "user networking"
		}
		fmt.Fprintf(w, "  NIC %d:       %s %s\n", i+1, where, paren(strings.TrimSpace(n.MAC+" "+n.Model)))
	}
	if d.Boot.Kernel != "" {
		boot := "kernel " + d.Boot.Kernel
		if d.Boot.Initrd != "" {
			boot += ", initrd " + d.Boot.Initrd
		}
		if d.Boot.Cmdline != "" {
			boot += fmt.Sprintf(", command line %q", d.Boot.Cmdline)
		}
		fmt.Fprintf(w, "  Boot:        %s\n", boot)
	}
	if !g.Failover.Capable {
		fmt.Fprintf(w, "  Failover:    not possible: %s\n", g.Failover.Reason)
	}
	if d.RawXML != "" {
		fmt.Fprintf(w, "  Definition:  imported libvirt XML (%d bytes)\n", len(d.RawXML))
	}
	fmt.Fprintf(w, "  Rev:         %d (pass --rev %d to guest edit to guard against concurrent changes)\n", g.Rev, g.Rev)
	if len(g.History) > 0 {
		fmt.Fprintln(w, "\nHistory:")
		for _, e := range g.History {
			fmt.Fprintf(w, "  %s\n", eventLine(e))
		}
	}
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return "(" + s + ")"
}

func cmdGuestCreate(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	var gf guestFlags
	gf.register(fs, true)
	form := fs.StringP("file", "f", "", "a JSON guest form (see docs/api.md); flags override its fields; - reads stdin")
	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		if len(pos) > 1 || (len(pos) == 0 && *form == "") {
			return Usagef("give the guest's name (or -f FORM.json naming it)")
		}
		body := map[string]any{}
		if *form != "" {
			b, err := readInput(env, *form)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(b, &body); err != nil {
				return Usagef("-f %s: not a JSON object: %v", *form, err)
			}
		}
		fb, err := gf.body(fs)
		if err != nil {
			return err
		}
		for k, v := range fb {
			body[k] = v
		}
		if len(pos) == 1 {
			body["name"] = pos[0]
		}
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
		g, err := c.CreateGuest(ctx, body)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, g)
		}
		fmt.Fprintf(env.Stdout, "guest %q created (%s, %d vCPUs, desired state %s)\n", g.Name, api.FormatSize(g.Spec.Memory), g.Spec.CPUs, g.Spec.State)
		return nil
	}
}

func cmdGuestImport(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	var gf guestFlags
	gf.register(fs, true)
	format := fs.String("format", "", "libvirt (domain XML) or xen (xm/xl config); default: guessed from the file")
	name := fs.String("name", "", "name of the guest (default: the name in the file)")
	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		if len(pos) != 1 {
			return Usagef("give one configuration file (- for stdin)")
		}
		data, err := readInput(env, pos[0])
		if err != nil {
			return err
		}
		if *format == "" {
			*format = "xen"
			if strings.HasPrefix(strings.TrimSpace(string(data)), "<") {
				*format = "libvirt"
			}
		}
		if *format != "libvirt" && *format != "xen" {
			return Usagef("--format %q: use libvirt or xen", *format)
		}
		extra, err := gf.body(fs)
		if err != nil {
			return err
		}
		if *name != "" {
			extra["name"] = *name
		}
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
		g, err := c.ImportGuest(ctx, *format, data, extra)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, g)
		}
		fmt.Fprintf(env.Stdout, "guest %q imported from %s (%s, %d vCPUs, %d disks, desired state %s)\n", g.Name, pos[0], api.FormatSize(g.Spec.Memory), g.Spec.CPUs, len(g.Definition.Disks), g.Spec.State)
		return nil
	}
}

func cmdGuestEdit(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	var gf guestFlags
	gf.register(fs, false)
	rev := fs.Int64("rev", 0, "fail if the guest changed since it was read at this rev (see guest show)")
	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		if len(pos) != 1 {
			return Usagef("give one guest name")
		}
		body, err := gf.body(fs)
		if err != nil {
			return err
		}
		if len(body) == 0 {
			return Usagef("nothing to change: give flags such as --memory or --vcpus")
		}
		if *rev != 0 {
			body["rev"] = *rev
		}
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
		g, err := c.EditGuest(ctx, pos[0], body)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, g)
		}
		fmt.Fprintf(env.Stdout, "guest %q changed; a running guest gets the new definition at its next start\n", g.Name)
		return nil
	}
}

func cmdGuestDelete(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)

	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		c, err := cf.connect(env, args, 1, "one guest name")
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.DeleteGuest(ctx, pos[0]); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, map[string]any{"deleted": pos[0]})
		}
		fmt.Fprintf(env.Stdout, "guest %q deleted (its disks are untouched)\n", pos[0])
		return nil
	}
}

func guestCommandFlags(kind string) func(*pflag.FlagSet) Runner {
	return func(fs *pflag.FlagSet) Runner {
		cf := addClientFlags(fs)
		wait := fs.Duration("wait", time.Minute, "how long to wait for the outcome (0: return once the command is queued)")
		return func(ctx context.Context, env *Env, pos []string) error {
			want := 1
			if kind == "migrate" || kind == "relocate" {
				want = 2
			}
			if len(pos) != want {
				if want == 2 {
					return Usagef("give the guest's name and the target node")
				}
				return Usagef("give one guest name")
			}
			node := ""
			if want == 2 {
				node = pos[1]
			}
			c, err := cf.client(env)
			if err != nil {
				return err
			}
			defer c.Close()
			res, err := c.GuestCommand(ctx, pos[0], kind, node)
			if err != nil {
				return err
			}
			return finishCommand(ctx, env, c, cf, res, *wait)
		}
	}
}

// finishCommand waits (up to wait) for a command the server answered
// before the manager finished it, then prints the outcome.
func finishCommand(ctx context.Context, env *Env, c *client.Client, cf *clientFlags, res *api.CommandResult, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for !res.Done && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		r, err := c.Command(ctx, res.ID)
		if err != nil {
			return fmt.Errorf("follow command %s (%s): %w", res.ID, res.Command, err)
		}
		res = r
	}
	if res.Done && res.Error != "" {
		if cf.output == "json" {
			_ = printJSON(env.Stdout, res)
		}
		return errors.New(res.Error)
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, res)
	}
	if !res.Done {
		fmt.Fprintf(env.Stdout, "%s: queued as command %s; the manager has not finished it yet (follow it with `haven events -f`)\n", res.Command, res.ID)
		return nil
	}
	fmt.Fprintf(env.Stdout, "%s: accepted by the manager (follow it with `haven events -f`)\n", res.Command)
	return nil
}

// eventLine formats one event log entry.
func eventLine(e cluster.Event) string {
	var about []string
	if e.Guest != "" {
		about = append(about, "guest "+e.Guest)
	}
	if e.Node != "" {
		about = append(about, "node "+e.Node)
	}
	line := fmt.Sprintf("%s  %-8s %s", fmtTime(e.At), e.Kind, e.Msg)
	if len(about) > 0 {
		line += "  [" + strings.Join(about, ", ") + "]"
	}
	if e.Who != "" {
		line += "  by " + e.Who
	}
	return line
}
