package cli

// `haven guest ...`: guests under cluster control, through the API only.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/spf13/pflag"
)

func init() {
	Register(&Command{Path: "guest list", Example: "haven guest list\nhaven guest list --tag prod\nhaven guest list -o json", Short: "list guests with their state and node", Flags: cmdGuestList})
	Register(&Command{Path: "guest show", Args: "NAME", Example: "haven guest show web1", Complete: completeGuestThenNode, Short: "show a guest: policy, definition, state, counts, history", Flags: cmdGuestShow})
	Register(&Command{Path: "guest create", Args: "NAME", Example: "haven guest create web1 --memory 2GiB --vcpus 2 --disk /srv/vm/web1.qcow2 --nic bridge=br0\nhaven guest create web2 --disk pool=shared,volume=web2 --domain web --recovery relocate\nhaven guest create -f web3.json", Short: "put a new guest under cluster control", Flags: cmdGuestCreate})
	Register(&Command{Path: "guest import", Args: "FILE", Example: "virsh dumpxml web1 > web1.xml && haven guest import web1.xml\nhaven guest import /etc/xen/db1.cfg --format xen --name db1", Short: "create a guest from a libvirt domain XML or a Xen config file", Flags: cmdGuestImport})
	Register(&Command{Path: "guest edit", Args: "NAME", Example: "haven guest edit web1 --memory 4GiB\nhaven guest edit web1 --vcpus 4 --rev 17\nhaven guest edit web1 --tag prod --tag web", Complete: completeGuestThenNode, Short: "change a guest's policy or definition (takes effect on its next start)", Flags: cmdGuestEdit})
	Register(&Command{Path: "guest delete", Args: "NAME", Example: "haven guest delete web1", Complete: completeGuestThenNode, Short: "remove a stopped or disabled guest from cluster control", Flags: cmdGuestDelete})
	for _, c := range []struct{ kind, args, short, example string }{
		{"start", "NAME", "start a guest (clusvcadm -e)", "haven guest start web1\nhaven guest start web1 --wait 2m   # until it runs, or why it failed\nhaven guest start --select 'web*'   # every guest whose name matches"},
		{"stop", "NAME", "stop a guest; it stays stopped until started", "haven guest stop web1\nhaven guest stop --select 'test-*' --on-host h3\nhaven guest stop --tag batch"},
		{"disable", "NAME", "stop a guest and keep the manager from starting it (clusvcadm -d)", "haven guest disable web1"},
		{"migrate", "NAME NODE", "live-migrate a running guest to NODE (clusvcadm -M)", "haven guest migrate web1 h3\nhaven guest migrate web1 h3 --wait 5m\nhaven guest migrate --on-host h1 h2        # empty h1 onto h2, live"},
		{"relocate", "NAME NODE", "stop a guest and start it on NODE (clusvcadm -r)", "haven guest relocate web1 h3"},
	} {
		Register(&Command{Path: "guest " + c.kind, Args: c.args, Short: c.short, Example: c.example, Flags: guestCommandFlags(c.kind), Complete: completeGuestThenNode})
	}
}

// guestFlags are the flags of guest create, import and edit. Only the
// flags given end up in the request body.
type guestFlags struct {
	memory, domain, recovery, window, state, node, kernel, initrd, cmdline, serial, after, cpuModel string
	vcpus, restarts, relocations, priority                                                          int
	migratable                                                                                      bool
	disks, nics, tags                                                                               listFlag
	noDisks, noNICs, noTags                                                                         bool
}

func (g *guestFlags) register(fs *pflag.FlagSet, create bool) {
	fs.StringVar(&g.memory, "memory", "", "memory, such as 512MiB or 2GiB (default 1GiB)")
	fs.IntVar(&g.vcpus, "vcpus", 0, "virtual CPUs (default 1)")
	fs.StringVar(&g.cpuModel, "cpu-model", "", "CPU model, overriding the cluster's: such as x86-64-v3, or host (\"\" for the cluster's)")
	fs.StringVar(&g.domain, "domain", "", "failover domain (empty: any host)")
	fs.StringVar(&g.recovery, "recovery", "", "after a crash: restart, relocate or disable (default restart)")
	fs.IntVar(&g.restarts, "max-restarts", 0, "restarts on the same host within the window before relocating (default 1)")
	fs.StringVar(&g.window, "restart-window", "", "window for max-restarts, such as 10m (default 10m)")
	fs.IntVar(&g.relocations, "max-relocations", 0, "relocations within the window before giving up (default 1)")
	fs.BoolVar(&g.migratable, "migratable", true, "may be live-migrated (--migratable=false to relocate instead)")
	fs.IntVar(&g.priority, "priority", 0, "0..1000: placed first when several guests need a host; with preemption on, may stop lower ones (default 0)")
	fs.StringVar(&g.after, "after", "", "start order: guests (comma-separated) that must run before it starts; it stops before them (\"\" for none)")
	fs.Var(&g.tags, "tag", "tag for selection (guest list --tag, bulk --tag): a-z, 0-9, '.', '_', '-' (repeat for more; on edit, replaces the tags)")
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
		fs.BoolVar(&g.noTags, "no-tags", false, "remove every tag")
	}
}

// patch returns the request fields for the flags given.
func (g *guestFlags) patch(fs *pflag.FlagSet) (api.GuestPatch, error) {
	set := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { set[f.Name] = true })
	var p api.GuestPatch
	str := func(flagName string) *string {
		if !set[flagName] {
			return nil
		}
		v := fs.Lookup(flagName).Value.String()
		return &v
	}
	num := func(flagName string) *int {
		if !set[flagName] {
			return nil
		}
		n, _ := strconv.Atoi(fs.Lookup(flagName).Value.String())
		return &n
	}
	if set["memory"] {
		n, err := api.ParseSize(g.memory)
		if err != nil {
			return p, Usagef("--memory: %v", err)
		}
		size := api.Size(n)
		p.Memory = &size
	}
	if set["restart-window"] {
		d, err := time.ParseDuration(g.window)
		if err != nil {
			return p, Usagef("--restart-window %q: give a duration such as 10m", g.window)
		}
		w := api.Duration(d)
		p.RestartWindow = &w
	}
	p.Domain, p.Node, p.SerialLog, p.CPUModel = str("domain"), str("node"), str("serial-log"), str("cpu-model")
	if s := str("recovery"); s != nil {
		r := model.Recovery(*s)
		p.Recovery = &r
	}
	if s := str("state"); s != nil {
		st := model.DesiredState(*s)
		p.State = &st
	}
	p.VCPUs, p.MaxRestarts, p.MaxRelocations, p.Priority = num("vcpus"), num("max-restarts"), num("max-relocations"), num("priority")
	if set["migratable"] {
		p.Migratable = &g.migratable
	}
	if set["after"] {
		after := []string{}
		for _, x := range strings.Split(g.after, ",") {
			if x = strings.TrimSpace(x); x != "" {
				after = append(after, x)
			}
		}
		p.After = &after
	}
	if len(g.tags) > 0 || g.noTags {
		if len(g.tags) > 0 && g.noTags {
			return p, Usagef("give --tag or --no-tags, not both")
		}
		tags := []string{}
		for _, t := range g.tags {
			if !cluster.ValidTag(t) {
				return p, Usagef("--tag %q: use lower-case letters, digits, '.', '_' or '-', at most %d, starting with a letter or digit", t, model.MaxTagLen)
			}
			tags = append(tags, t)
		}
		p.Tags = &tags
	}
	if len(g.disks) > 0 || g.noDisks {
		disks := []guestdef.Disk{}
		for _, d := range g.disks {
			m, err := parseKV(d, "path", "disk", map[string]bool{"path": true, "pool": true, "volume": true, "format": true, "bus": true, "readonly": true})
			if err != nil {
				return p, err
			}
			disks = append(disks, guestdef.Disk{Path: m["path"], Pool: m["pool"], Volume: m["volume"], Format: m["format"], Bus: m["bus"], ReadOnly: m["readonly"] != ""})
		}
		p.Disks = &disks
	}
	if len(g.nics) > 0 || g.noNICs {
		nics := []guestdef.NIC{}
		for _, n := range g.nics {
			m, err := parseKV(n, "bridge", "nic", map[string]bool{"bridge": true, "user": true, "mac": true, "model": true})
			if err != nil {
				return p, err
			}
			nic := guestdef.NIC{Bridge: m["bridge"], User: m["user"] != "", MAC: m["mac"], Model: m["model"]}
			if nic.Bridge == "user" {
				nic.Bridge, nic.User = "", true
			}
			nics = append(nics, nic)
		}
		p.NICs = &nics
	}
	if set["kernel"] || set["initrd"] || set["cmdline"] {
		p.Boot = &guestdef.Boot{Kernel: g.kernel, Initrd: g.initrd, Cmdline: g.cmdline}
	}
	return p, nil
}

// parseKV reads "a=1,b=2,flag" ("x" alone is first=x); boolean keys
// (readonly, user) take no value and read "true".
func parseKV(s, first, what string, keys map[string]bool) (map[string]string, error) {
	m := map[string]string{}
	for i, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		switch {
		case !ok && (k == "readonly" || k == "user"):
			m[k] = "true"
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
	tag := fs.String("tag", "", "list only the guests with this tag")

	return func(ctx context.Context, env *Env, args []string) error {
		c, err := cf.connect(env, args, 0, "")
		if err != nil {
			return err
		}
		defer c.Close()
		if *tag != "" && !cluster.ValidTag(*tag) {
			return Usagef("--tag %q: use lower-case letters, digits, '.', '_' or '-', at most %d", *tag, model.MaxTagLen)
		}
		gs, err := c.Guests(ctx)
		if err != nil {
			return err
		}
		if *tag != "" {
			gs = api.FilterTag(gs, *tag)
		}
		return printTable(env, cf, gs, []string{"NAME", "STATE", "NODE", "DESIRED", "DOMAIN", "MEMORY", "VCPUS", "TAGS"}, func(g api.GuestRow) []string {
			return []string{g.Name, g.State, g.Node, string(g.Desired), g.Domain, api.FormatSize(g.Memory), strconv.Itoa(g.VCPUs), strings.Join(g.Tags, ",")}
		})
	}
}

var cmdGuestShow = showCmd("one guest name", (*client.Client).Guest,
	func(w io.Writer, g *api.GuestInfo) error { printGuest(w, g); return nil })

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
	fmt.Fprintf(w, "  Priority:    %d\n", s.Priority)
	if len(s.Tags) > 0 {
		fmt.Fprintf(w, "  Tags:        %s\n", strings.Join(s.Tags, ", "))
	}
	if len(s.After) > 0 {
		fmt.Fprintf(w, "  Starts after: %s\n", strings.Join(s.After, ", "))
	}
	if s.CPUModel != "" || rt.CPUModel != "" {
		fmt.Fprintf(w, "  CPU model:   %s\n", cpuModelLine(s.CPUModel, rt.CPUModel))
	}
	if rt.Wait != "" {
		fmt.Fprintf(w, "  Waits:       %s\n", rt.Wait)
	}
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
	if d.GuestAgent {
		fmt.Fprintf(w, "  Guest agent: yes (its heartbeat failing is a crash: a hung guest)\n")
	}
	for _, c := range d.Checks() {
		if c.Name == "heartbeat" {
			continue
		}
		what := map[string]string{"agent": "guest agent ping", "tcp": fmt.Sprintf("tcp %d", c.TCP),
			"http": fmt.Sprintf("http %s → %d", c.HTTP, c.Status), "exec": fmt.Sprintf("exec %s → %d", strings.Join(c.Exec, " "), c.ExitCode)}[c.Kind()]
		fmt.Fprintf(w, "  Health:      %s: %s (every %s, timeout %s, %d failures, grace %s)\n", c.Name, what, c.Interval.D(), c.Timeout.D(), c.Failures, c.StartGrace.D())
	}
	for _, r := range rt.Health {
		st := "passing"
		if !r.OK {
			st = fmt.Sprintf("FAILING (%d in a row)", r.Failures)
			if r.Failures == 0 {
				st = "failing (in its start grace: not counted)"
			}
		} else if r.At.IsZero() {
			st = "not run yet"
		}
		line := fmt.Sprintf("  Check now:   %s: %s", r.Check, st)
		if !r.At.IsZero() {
			line += " at " + fmtTime(r.At)
		}
		if r.Output != "" {
			line += fmt.Sprintf(": %q", r.Output)
		}
		fmt.Fprintln(w, line)
	}
	if d.Display != "" {
		fmt.Fprintf(w, "  Display:     %s (haven's web UI shows it)\n", d.Display)
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
		p, err := gf.patch(fs)
		if err != nil {
			return err
		}
		if len(pos) == 1 {
			p.Name = &pos[0]
		}
		var body any = p
		if *form != "" {
			// The form may hold any field of the API's guest form (docs/api.md):
			// it is sent as written, with the flags' fields over it.
			b, err := readInput(env, *form)
			if err != nil {
				return err
			}
			m := map[string]json.RawMessage{}
			if err := json.Unmarshal(b, &m); err != nil {
				return Usagef("-f %s: not a JSON object: %v", *form, err)
			}
			pb, err := json.Marshal(p)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(pb, &m); err != nil {
				return err
			}
			body = m
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
		return cf.printf(env, g, "guest %q created (%s, %d vCPUs, desired state %s)", g.Name, api.FormatSize(g.Spec.Memory), g.Spec.CPUs, g.Spec.State)
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
		extra, err := gf.patch(fs)
		if err != nil {
			return err
		}
		if *name != "" {
			extra.Name = name
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
		return cf.printf(env, g, "guest %q imported from %s (%s, %d vCPUs, %d disks, desired state %s)", g.Name, pos[0], api.FormatSize(g.Spec.Memory), g.Spec.CPUs, len(g.Definition.Disks), g.Spec.State)
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
		body, err := gf.patch(fs)
		if err != nil {
			return err
		}
		if body.Empty() {
			return Usagef("nothing to change: give flags such as --memory or --vcpus")
		}
		body.Rev = *rev
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
		g, err := c.EditGuest(ctx, pos[0], body)
		if err != nil {
			return err
		}
		return cf.printf(env, g, "guest %q changed; a running guest gets the new definition at its next start", g.Name)
	}
}

var cmdGuestDelete = deleteCmd("one guest name", (*client.Client).DeleteGuest, "guest %q deleted (its disks are untouched)")

func guestCommandFlags(kind string) func(*pflag.FlagSet) Runner {
	return func(fs *pflag.FlagSet) Runner {
		cf := addClientFlags(fs)
		wait := fs.Duration("wait", time.Minute, "how long to wait for the outcome: running on the target, stopped, or failed with the reason (0: only for the manager to accept the command)")
		var sel selector
		fs.StringVar(&sel.pattern, "select", "", "act on every guest whose name matches this pattern (* and ?, as in 'web*') instead of one NAME")
		fs.StringVar(&sel.host, "on-host", "", "act on every guest on this host (with --select: those of them that match)")
		fs.StringVar(&sel.tag, "tag", "", "act on every guest with this tag (with --select/--on-host: those of them that match)")
		return func(ctx context.Context, env *Env, pos []string) error {
			want := 1
			if kind == "migrate" || kind == "relocate" {
				want = 2
			}
			if sel.any() {
				want--
			}
			if len(pos) != want {
				switch {
				case sel.any() && want == 1:
					return Usagef("give the target node (the guests come from --select/--on-host/--tag)")
				case sel.any():
					return Usagef("give no guest name with --select, --on-host or --tag")
				case want == 2:
					return Usagef("give the guest's name and the target node")
				}
				return Usagef("give one guest name")
			}
			node := ""
			if kind == "migrate" || kind == "relocate" {
				node = pos[len(pos)-1]
			}
			c, err := cf.client(env)
			if err != nil {
				return err
			}
			defer c.Close()
			if sel.any() {
				return bulkCommand(ctx, env, c, cf, kind, node, sel, *wait)
			}
			res, err := c.GuestCommand(ctx, pos[0], kind, node)
			if err != nil {
				return err
			}
			return finishCommand(ctx, env, c, cf, res, *wait)
		}
	}
}

// selector picks guests by name pattern and host.
type selector struct{ pattern, host, tag string }

func (s selector) any() bool { return s.pattern != "" || s.host != "" || s.tag != "" }

func (s selector) String() string {
	var w []string
	if s.pattern != "" {
		w = append(w, fmt.Sprintf("named %q", s.pattern))
	}
	if s.host != "" {
		w = append(w, "on "+s.host)
	}
	if s.tag != "" {
		w = append(w, fmt.Sprintf("tagged %q", s.tag))
	}
	return strings.Join(w, " and ")
}

// pick returns the names of the guests that match, sorted.
func (s selector) pick(gs []api.GuestRow) ([]string, error) {
	if s.pattern != "" {
		if _, err := path.Match(s.pattern, ""); err != nil {
			return nil, Usagef("--select %q: %v", s.pattern, err)
		}
	}
	if s.tag != "" && !cluster.ValidTag(s.tag) {
		return nil, Usagef("--tag %q: use lower-case letters, digits, '.', '_' or '-', at most %d", s.tag, model.MaxTagLen)
	}
	var out []string
	for _, g := range gs {
		if s.pattern != "" {
			if ok, _ := path.Match(s.pattern, g.Name); !ok {
				continue
			}
		}
		if s.host != "" && g.Node != s.host {
			continue
		}
		if s.tag != "" && !slices.Contains(g.Tags, s.tag) {
			continue
		}
		out = append(out, g.Name)
	}
	sort.Strings(out)
	return out, nil
}

// bulkCommand gives a command to every selected guest, then waits for
// each outcome in parallel and reports them in name order; it fails if
// any failed.
func bulkCommand(ctx context.Context, env *Env, c *client.Client, cf *clientFlags, kind, node string, sel selector, wait time.Duration) error {
	gs, err := c.Guests(ctx)
	if err != nil {
		return err
	}
	names, err := sel.pick(gs)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return fmt.Errorf("no guest %s", sel)
	}
	if cf.output != "json" {
		fmt.Fprintf(env.Stdout, "%s %d guests %s: %s\n", kind, len(names), sel, strings.Join(names, ", "))
	}
	type outcomeOf struct {
		out, errs strings.Builder
		err       error
	}
	results := make([]*outcomeOf, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		r := &outcomeOf{}
		results[i] = r
		res, err := c.GuestCommand(ctx, name, kind, node)
		if err != nil {
			r.err = err
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sub := &Env{Stdout: &r.out, Stderr: &r.errs, Stdin: env.Stdin, Getenv: env.Getenv}
			r.err = finishCommand(ctx, sub, c, cf, res, wait)
		}()
	}
	wg.Wait()
	failed := 0
	for i, r := range results {
		fmt.Fprint(env.Stdout, r.out.String())
		if r.err != nil {
			failed++
			fmt.Fprintf(env.Stderr, "%s: %v\n", names[i], r.err)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d guests failed (see above)", failed, len(names))
	}
	return nil
}

// finishCommand waits (up to wait) for a command's outcome: first for
// the manager to accept it, then, for guest commands, until the guest
// runs on the target, is stopped, or failed (with the reason from its
// event log); for maintenance, until the host is empty. With wait 0 it
// returns once the command is queued.
func finishCommand(ctx context.Context, env *Env, c *client.Client, cf *clientFlags, res *api.CommandResult, wait time.Duration) error {
	start := time.Now()
	// The manager takes a command up within a step; wait that long even
	// with --wait 0.
	deadline := start.Add(max(wait, acceptWait))
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	sleep := func() error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			return nil
		}
	}
	for !res.Done && time.Now().Before(deadline) {
		if err := sleep(); err != nil {
			return err
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
	if !res.Done {
		return cf.printf(env, res, "%s: queued as command %s; the manager has not taken it up after %v (is there one? see `haven status`; follow it with `haven events -f`)", res.Command, res.ID, time.Since(start).Round(time.Second))
	}
	deadline = start.Add(wait)
	if wait <= 0 || (res.Guest == "" && res.Kind != manager.CmdMaintenanceOn && res.Kind != manager.CmdMaintenanceOff) {
		return cf.printf(env, res, "%s: accepted by the manager (follow it with `haven events -f`)", res.Command)
	}
	var out outcome
	var err error
	for {
		if res.Guest != "" {
			out, err = guestOutcome(ctx, c, res)
		} else {
			out, err = maintenanceOutcome(ctx, c, res)
		}
		if err != nil {
			return fmt.Errorf("follow %s: %w", res.Command, err)
		}
		if out.done || out.failed || !time.Now().Before(deadline) {
			break
		}
		if err := sleep(); err != nil {
			return err
		}
	}
	took := time.Since(start).Round(100 * time.Millisecond)
	if cf.output == "json" {
		if err := printJSON(env.Stdout, map[string]any{"command": res, "done": out.done, "failed": out.failed, "outcome": out.msg, "seconds": took.Seconds()}); err != nil {
			return err
		}
	}
	switch {
	case out.failed:
		return fmt.Errorf("%s failed after %v: %s", res.Command, took, out.msg)
	case !out.done:
		return fmt.Errorf("%s: not finished after %v: %s (follow it with `haven events -f`)", res.Command, wait, out.msg)
	}
	if cf.output != "json" {
		fmt.Fprintf(env.Stdout, "%s: done in %v: %s\n", res.Command, took, out.msg)
	}
	return nil
}

// acceptWait is how long a command waits for the manager to accept it,
// even with --wait 0.
const acceptWait = 10 * time.Second

// outcome is where a command stands: done, failed (msg says why) or
// still under way (msg says what is seen).
type outcome struct {
	done, failed bool
	msg          string
}

// guestOutcome reads a guest and says whether res's command is carried
// out.
func guestOutcome(ctx context.Context, c *client.Client, res *api.CommandResult) (outcome, error) {
	g, err := c.Guest(ctx, res.Guest)
	if err != nil {
		return outcome{}, err
	}
	rt := g.Runtime
	where := rt.State
	if rt.Node != "" {
		where += " on " + rt.Node
	}
	if rt.Running {
		where += ", running"
	}
	if rt.Op != nil {
		where += fmt.Sprintf(", %s in progress", rt.Op.Kind)
		return outcome{msg: where}, nil
	}
	if rt.State == string(manager.GuestFailed) {
		return outcome{failed: true, msg: where + ": " + lastTrouble(g.History, res.At)}, nil
	}
	switch res.Kind {
	case manager.CmdStart:
		if rt.Running && rt.State == string(manager.GuestStarted) {
			return outcome{done: true, msg: fmt.Sprintf("%s is running on %s", g.Name, rt.Node)}, nil
		}
	case manager.CmdMigrate, manager.CmdRelocate:
		if rt.Running && rt.Node == res.Node {
			return outcome{done: true, msg: fmt.Sprintf("%s is running on %s", g.Name, rt.Node)}, nil
		}
		if rt.Running && rt.Node != res.Node {
			// No operation in flight and not on the target: it failed.
			if why := lastTrouble(g.History, res.At); why != "" {
				return outcome{failed: true, msg: fmt.Sprintf("%s still runs on %s: %s", g.Name, rt.Node, why)}, nil
			}
		}
	case manager.CmdStop, manager.CmdDisable:
		if !rt.Running && (rt.State == string(manager.GuestStopped) || rt.State == string(manager.GuestDisabled)) {
			return outcome{done: true, msg: fmt.Sprintf("%s is %s", g.Name, rt.State)}, nil
		}
	default:
		return outcome{done: true, msg: where}, nil
	}
	return outcome{msg: where}, nil
}

// lastTrouble is the latest event about a guest since a time that tells
// of a failure, or "".
func lastTrouble(hist []cluster.Event, since time.Time) string {
	for i := len(hist) - 1; i >= 0; i-- {
		e := hist[i]
		if e.At.Before(since.Add(-time.Second)) {
			break
		}
		m := strings.ToLower(e.Msg)
		if strings.Contains(m, "fail") || strings.Contains(m, "refus") || strings.Contains(m, "could not") || strings.Contains(m, "crashed") {
			return e.Msg
		}
	}
	return ""
}

// maintenanceOutcome says whether a host put in maintenance is empty (or
// one taken out of it is back).
func maintenanceOutcome(ctx context.Context, c *client.Client, res *api.CommandResult) (outcome, error) {
	if res.Kind != manager.CmdMaintenanceOn {
		return outcome{done: true, msg: "host " + res.Node + " is out of maintenance"}, nil
	}
	gs, err := c.Guests(ctx)
	if err != nil {
		return outcome{}, err
	}
	var left []string
	for _, g := range gs {
		if g.Node == res.Node && (g.Running || g.Op != nil) {
			left = append(left, g.Name)
		}
	}
	if len(left) == 0 {
		return outcome{done: true, msg: "host " + res.Node + " is in maintenance and runs no guest"}, nil
	}
	return outcome{msg: fmt.Sprintf("%d guests still on %s (%s)", len(left), res.Node, strings.Join(left, ", "))}, nil
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

// cpuModelLine says which CPU model a guest has: its own or the cluster's,
// and the one it runs with.
func cpuModelLine(own, runs string) string {
	switch {
	case own == "":
		return runs + " (the cluster's)"
	case runs != "" && runs != own:
		return own + " (runs with " + runs + ")"
	}
	return own
}
