// Package fence owns fencing through the standard fence_* agents: the
// configuration of fence devices and of each node's fencing levels, checking
// that configuration against the agents' own metadata, running agents with
// the fence-agents stdin protocol (so secrets never reach a command line),
// walking a node's levels until one fences it, and hiding secrets from
// everything Haven shows or logs.
package fence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Device is one fence device: an agent and how to reach it. It is stored as
// JSON in the cluster store.
type Device struct {
	// Name identifies the device in levels and on the command line.
	Name string `json:"name"`
	// Agent is a fence agent name on the search path (fence_ipmilan,
	// fence_redfish, fence_virsh, fence_sbd, fence_dummy...) or an absolute
	// path to an executable speaking the same protocol.
	Agent string `json:"agent"`
	// Params are the agent's parameters, named as on its stdin (ip, username,
	// password, ssl_insecure...), without action and without the plug.
	Params map[string]string `json:"params,omitempty"`
	// Secrets names the Params (or NodeParams) whose values are secret, on top
	// of those IsSecretName always treats so (password, passwd...).
	Secrets []string `json:"secrets,omitempty"`
	// Plugs maps a node name to its plug (outlet, VM name, BMC port, SBD
	// node name) on this device; it is passed as the agent's plug (or port)
	// parameter when fencing that node.
	Plugs map[string]string `json:"plugs,omitempty"`
	// NodeParams maps a node name to parameters that apply only when fencing
	// that node, over Params (such as one ip per BMC).
	NodeParams map[string]map[string]string `json:"node_params,omitempty"`
	// Timeout bounds each run of the agent; 0 means DefaultTimeout.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// DefaultTimeout bounds an agent run when a device sets no timeout.
const DefaultTimeout = 30 * time.Second

// IsSecret reports whether the parameter called name holds a secret.
func (d *Device) IsSecret(name string) bool {
	return IsSecretName(name) || slices.Contains(d.Secrets, name)
}

// paramsFor returns the parameters one run for node gets (without action),
// given the agent's plug parameter name ("" when it takes none).
func (d *Device) paramsFor(node, plugParam string) (map[string]string, error) {
	p := maps.Clone(d.Params)
	if p == nil {
		p = map[string]string{}
	}
	maps.Copy(p, d.NodeParams[node])
	if plug, ok := d.Plugs[node]; ok {
		if plugParam == "" {
			return nil, fmt.Errorf("fence device %q: agent %s takes no plug, but a plug is set for node %q: remove it", d.Name, d.Agent, node)
		}
		p[plugParam] = plug
	}
	return p, nil
}

func (d *Device) timeout() time.Duration {
	if d.Timeout > 0 {
		return d.Timeout
	}
	return DefaultTimeout
}

// Redacted returns a copy of the device fit for API reads and logs: every
// secret value replaced by Redacted.
func (d Device) Redacted() Device {
	r := d
	r.Secrets = slices.Clone(d.Secrets)
	r.Params = redactMap(&d, d.Params)
	r.Plugs = maps.Clone(d.Plugs)
	if d.NodeParams != nil {
		r.NodeParams = make(map[string]map[string]string, len(d.NodeParams))
		for n, p := range d.NodeParams {
			r.NodeParams[n] = redactMap(&d, p)
		}
	}
	return r
}

func redactMap(d *Device, m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if d.IsSecret(k) {
			v = Redacted
		}
		out[k] = v
	}
	return out
}

// KeepSecrets returns d with every secret whose value is Redacted (a client
// sending back what it read) replaced by the value old has for it, so an
// update through the API need not resend passwords.
//
// A device re-pointed elsewhere (another agent, or another address: ip,
// ipaddr, hostname, ipport...) keeps no secret: its password must be given
// again, or whoever edits the configuration could send it to an address of
// their choosing.
func (d Device) KeepSecrets(old Device) Device {
	same := d.Agent == old.Agent && sameTarget(d.Params, old.Params)
	for n, p := range d.NodeParams {
		same = same && sameTarget(p, old.NodeParams[n])
	}
	keep := func(m, from map[string]string) map[string]string {
		if m == nil {
			return nil
		}
		m = maps.Clone(m)
		for k, v := range m {
			if v == Redacted && d.IsSecret(k) && same {
				if ov, ok := from[k]; ok {
					m[k] = ov
				}
			}
		}
		return m
	}
	d.Params = keep(d.Params, old.Params)
	if d.NodeParams != nil {
		np := make(map[string]map[string]string, len(d.NodeParams))
		for n, p := range d.NodeParams {
			np[n] = keep(p, old.NodeParams[n])
		}
		d.NodeParams = np
	}
	return d
}

// sameTarget reports whether two parameter sets of a device name the same
// place: the same address parameters (ip, ipaddr, hostname, ipport...).
func sameTarget(a, b map[string]string) bool {
	for _, m := range []map[string]string{a, b} {
		for k := range m {
			if addressParam(k) && a[k] != b[k] {
				return false
			}
		}
	}
	return true
}

// addressParam reports whether a fence parameter says where the device is.
func addressParam(k string) bool {
	k = strings.ToLower(strings.ReplaceAll(k, "-", "_"))
	switch k {
	case "ip", "ipaddr", "ipport", "hostname", "host", "addr", "address", "server", "uri", "url", "ssl_host", "api_host", "endpoint":
		return true
	}
	return strings.HasSuffix(k, "_ip") || strings.HasSuffix(k, "_addr") || strings.HasSuffix(k, "_host") || strings.HasSuffix(k, "_url")
}

// Level is one fencing level of a node: devices that must all succeed.
type Level struct {
	Devices []string `json:"devices"`
}

// Action is what fencing does to a node.
type Action string

const (
	// ActionOff powers the node off and confirms with status that it is off.
	ActionOff Action = "off"
	// ActionReboot power-cycles the node.
	ActionReboot Action = "reboot"
)

// Config is the cluster's fencing configuration.
type Config struct {
	Devices []Device `json:"devices"`
	// Levels maps a node name to its levels, tried in order: level 1 first,
	// then level 2 if any device of level 1 failed, and so on.
	Levels map[string][]Level `json:"levels"`
	// Action is ActionOff (the default) or ActionReboot.
	Action Action `json:"action,omitempty"`
}

// Check checks the configuration's structure without running any agent:
// names, references from levels to devices, secrets and plugs.
func (c *Config) Check() error {
	var errs []error
	byName := map[string]*Device{}
	for i := range c.Devices {
		d := &c.Devices[i]
		switch {
		case d.Name == "" || strings.ContainsAny(d.Name, " /\t\n"):
			errs = append(errs, fmt.Errorf("fence device %d: name %q must be non-empty, without spaces or '/'", i+1, d.Name))
			continue
		case byName[d.Name] != nil:
			errs = append(errs, fmt.Errorf("fence device %q defined twice: rename one", d.Name))
			continue
		case d.Agent == "":
			errs = append(errs, fmt.Errorf("fence device %q: set its agent (such as fence_ipmilan)", d.Name))
		case !strings.HasPrefix(filepath.Base(d.Agent), "fence_") || (!filepath.IsAbs(d.Agent) && strings.Contains(d.Agent, "/")):
			errs = append(errs, fmt.Errorf("fence device %q: agent %q is not a fence agent: give fence_<kind> (such as fence_ipmilan) or the absolute path of one", d.Name, d.Agent))
		case d.Timeout < 0:
			errs = append(errs, fmt.Errorf("fence device %q: timeout %s is negative", d.Name, d.Timeout))
		}
		byName[d.Name] = d
		for _, s := range d.Secrets {
			_, inParams := d.Params[s]
			inNode := false
			for _, np := range d.NodeParams {
				_, ok := np[s]
				inNode = inNode || ok
			}
			if !inParams && !inNode {
				errs = append(errs, fmt.Errorf("fence device %q: secret %q is not one of its parameters: fix the name", d.Name, s))
			}
		}
		for _, m := range append([]map[string]string{d.Params}, slices.Collect(maps.Values(d.NodeParams))...) {
			for k, v := range m {
				// Refused here, not only when the agent runs: a stored
				// value the agent protocol cannot carry would leave the
				// host unfenceable.
				if !validParamName(k) {
					errs = append(errs, fmt.Errorf("fence device %q: parameter name %q: use letters, digits, '_' or '-'", d.Name, k))
				}
				if strings.ContainsAny(v, "\n\r\x00") {
					errs = append(errs, fmt.Errorf("fence device %q: parameter %q holds a newline or NUL, which the agent protocol cannot carry", d.Name, k))
				}
				if reserved[k] || k == "plug" || k == "port" {
					errs = append(errs, fmt.Errorf("fence device %q: parameter %q is set by Haven (use plugs for a node's plug): remove it", d.Name, k))
				}
			}
		}
	}
	switch c.Action {
	case "", ActionOff, ActionReboot:
	default:
		errs = append(errs, fmt.Errorf("fencing action %q: use %q or %q", c.Action, ActionOff, ActionReboot))
	}
	for _, node := range sortedKeys(c.Levels) {
		levels := c.Levels[node]
		if len(levels) == 0 {
			errs = append(errs, fmt.Errorf("node %q: fencing has no levels: add one or remove the node", node))
		}
		for li, l := range levels {
			if len(l.Devices) == 0 {
				errs = append(errs, fmt.Errorf("node %q level %d has no devices: add one or remove the level", node, li+1))
			}
			for _, dn := range l.Devices {
				d := byName[dn]
				if d == nil {
					errs = append(errs, fmt.Errorf("node %q level %d: no fence device %q: define it or fix the name", node, li+1, dn))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Redacted returns a copy of the configuration with every device redacted.
func (c Config) Redacted() Config {
	r := c
	r.Devices = make([]Device, len(c.Devices))
	for i, d := range c.Devices {
		r.Devices[i] = d.Redacted()
	}
	r.Levels = maps.Clone(c.Levels)
	return r
}

// ErrNotConfigured means a node has no fencing levels.
var ErrNotConfigured = errors.New("no fencing configured")

// ErrFenceFailed means every level failed: the node is not known to be
// fenced, and its guests must not be started elsewhere.
var ErrFenceFailed = errors.New("fencing failed")

// Options are a Fencer's collaborators. Zero values take defaults.
type Options struct {
	Runner *Runner        // nil: a Runner with the default search path
	Cache  *MetadataCache // nil: a new cache on Runner
	Logger *slog.Logger   // nil: slog.Default()
	Now    func() time.Time
}

// Fencer fences nodes by the configuration it was made with. It is safe for
// concurrent use; it keeps no state but the metadata cache.
type Fencer struct {
	cfg    Config
	dev    map[string]*Device
	runner *Runner
	cache  *MetadataCache
	log    *slog.Logger
	now    func() time.Time
}

// New checks cfg's structure (see Config.Check) and returns a Fencer for it.
func New(cfg Config, opts Options) (*Fencer, error) {
	if err := cfg.Check(); err != nil {
		return nil, fmt.Errorf("fencing configuration: %w", err)
	}
	if cfg.Action == "" {
		cfg.Action = ActionOff
	}
	f := &Fencer{cfg: cfg, dev: map[string]*Device{}, runner: opts.Runner, cache: opts.Cache, log: opts.Logger, now: opts.Now}
	if f.runner == nil {
		f.runner = &Runner{}
	}
	if f.cache == nil {
		f.cache = NewMetadataCache(f.runner)
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	if f.now == nil {
		f.now = time.Now
	}
	for i := range f.cfg.Devices {
		f.dev[f.cfg.Devices[i].Name] = &f.cfg.Devices[i]
	}
	return f, nil
}

// Validate checks every device against its agent's metadata (running each
// agent once for it), for every node whose levels use the device: unknown
// parameters, missing required ones, bad values, a missing plug. Warnings
// name deprecated parameters.
func (f *Fencer) Validate(ctx context.Context) (warnings []string, err error) {
	var errs []error
	checked := map[string]bool{}
	for _, node := range sortedKeys(f.cfg.Levels) {
		for _, l := range f.cfg.Levels[node] {
			for _, dn := range l.Devices {
				if checked[node+"\x00"+dn] {
					continue
				}
				checked[node+"\x00"+dn] = true
				w, err := f.checkDevice(ctx, f.dev[dn], node)
				warnings = append(warnings, w...)
				if err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	// Devices no level uses yet are checked without a node.
	for _, d := range f.cfg.Devices {
		used := false
		for k := range checked {
			used = used || strings.HasSuffix(k, "\x00"+d.Name)
		}
		if !used {
			w, err := f.checkDevice(ctx, f.dev[d.Name], "")
			warnings = append(warnings, w...)
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	slices.Sort(warnings)
	return slices.Compact(warnings), errors.Join(errs...)
}

// checkDevice checks d's parameters for node ("" for none) against the
// agent's metadata and returns the parameters of the run.
func (f *Fencer) checkDevice(ctx context.Context, d *Device, node string) ([]string, error) {
	_, w, err := f.prepare(ctx, d, node)
	return w, err
}

func (f *Fencer) prepare(ctx context.Context, d *Device, node string) (map[string]string, []string, error) {
	md, err := f.cache.Get(ctx, d.Agent)
	if err != nil {
		return nil, nil, fmt.Errorf("fence device %q: %w", d.Name, err)
	}
	params, err := d.paramsFor(node, md.plugParam())
	if err != nil {
		return nil, nil, err
	}
	check := params
	if node == "" && md.plugParam() != "" {
		// Without a node there is no plug yet: do not ask for one.
		check = maps.Clone(params)
		check[md.plugParam()] = "x"
	}
	w, err := md.Check(check)
	if err != nil {
		// Check quotes bad values; a secret's must not show.
		err = errors.New(redactor(params, d.Secrets)(err.Error()))
		where := ""
		if node != "" {
			where = fmt.Sprintf(" for node %q", node)
			if pp := md.plugParam(); pp != "" && d.Plugs[node] == "" && strings.Contains(err.Error(), fmt.Sprintf("%q", pp)) {
				err = fmt.Errorf("%w (set plugs.%s on the device)", err, node)
			}
		}
		return nil, w, fmt.Errorf("fence device %q%s: %w", d.Name, where, err)
	}
	return params, w, nil
}

// Attempt is one agent run during Fence or Test.
type Attempt struct {
	Level    int           `json:"level"` // 1-based; 0 in a device test
	Device   string        `json:"device"`
	Action   string        `json:"action"`
	ExitCode int           `json:"exit_code"` // -1 when the agent did not exit by itself
	OK       bool          `json:"ok"`
	Output   string        `json:"output,omitempty"` // secrets redacted
	Error    string        `json:"error,omitempty"`  // secrets redacted
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
}

// Result is what Fence did.
type Result struct {
	Node string `json:"node"`
	// Level is the 1-based level that fenced the node, 0 if none did.
	Level int `json:"level"`
	// Devices are the devices of that level.
	Devices []string `json:"devices,omitempty"`
	Action  Action   `json:"action"`
	// Confirmed says a status run saw the node off after an off action.
	Confirmed bool          `json:"confirmed"`
	Start     time.Time     `json:"start"`
	Duration  time.Duration `json:"duration"`
	Attempts  []Attempt     `json:"attempts"`
}

// Fence fences node: it tries the node's levels in order; a level succeeds
// when every one of its devices does. With ActionOff each device is asked to
// power the node off and then asked for its status, which must say off. With
// ActionReboot a one-device level reboots; a level of several devices turns
// them all off (confirmed) and then all on. It returns the result with every
// attempt, and an error wrapping ErrFenceFailed (or ErrNotConfigured) when
// no level fenced the node: then the node must be treated as still running.
func (f *Fencer) Fence(ctx context.Context, node string) (Result, error) {
	res := Result{Node: node, Action: f.cfg.Action, Start: f.now()}
	levels := f.cfg.Levels[node]
	if len(levels) == 0 {
		return res, fmt.Errorf("fence node %q: %w: add fence levels for it", node, ErrNotConfigured)
	}
	var fails []string
	for li, l := range levels {
		if ctx.Err() != nil {
			fails = append(fails, fmt.Sprintf("level %d not tried: %v", li+1, ctx.Err()))
			break
		}
		err := f.fenceLevel(ctx, &res, node, li+1, l)
		if err == nil {
			res.Level = li + 1
			res.Devices = slices.Clone(l.Devices)
			res.Duration = f.now().Sub(res.Start)
			f.log.Info("node fenced", "node", node, "op", "fence", "level", res.Level, "devices", strings.Join(l.Devices, ","), "action", string(res.Action), "confirmed", res.Confirmed, "duration", res.Duration)
			return res, nil
		}
		f.log.Warn("fence level failed", "node", node, "op", "fence", "level", li+1, "err", err)
		fails = append(fails, fmt.Sprintf("level %d: %v", li+1, err))
	}
	res.Duration = f.now().Sub(res.Start)
	res.Confirmed = false
	return res, fmt.Errorf("fence node %q: %w: %s; check the devices with `haven fence test %s`", node, ErrFenceFailed, strings.Join(fails, "; "), node)
}

func (f *Fencer) fenceLevel(ctx context.Context, res *Result, node string, level int, l Level) error {
	res.Confirmed = false
	if f.cfg.Action == ActionReboot && len(l.Devices) == 1 {
		_, err := f.attempt(ctx, res, node, level, l.Devices[0], "reboot", ExitSuccess)
		return err
	}
	// Off (and, for a multi-device reboot, off everywhere before on
	// anywhere, or the node would never lose power).
	for _, dn := range l.Devices {
		if _, err := f.attempt(ctx, res, node, level, dn, "off", ExitSuccess); err != nil {
			return err
		}
		if _, err := f.attempt(ctx, res, node, level, dn, "status", ExitOff); err != nil {
			return fmt.Errorf("confirm off: %w", err)
		}
	}
	res.Confirmed = true
	if f.cfg.Action == ActionReboot {
		for _, dn := range l.Devices {
			if _, err := f.attempt(ctx, res, node, level, dn, "on", ExitSuccess); err != nil {
				// The node was off: it is fenced even if it does not come back.
				f.log.Warn("power on after fencing failed", "node", node, "op", "fence", "device", dn, "err", err)
			}
		}
	}
	return nil
}

// attempt runs one device action for node and records it in res. want is
// the exit code that counts as success.
func (f *Fencer) attempt(ctx context.Context, res *Result, node string, level int, dn, action string, want int) (Attempt, error) {
	a, err := f.run(ctx, node, level, dn, action, want)
	res.Attempts = append(res.Attempts, a)
	return a, err
}

// run runs one action of device dn for node; the exit codes in want count as
// success.
func (f *Fencer) run(ctx context.Context, node string, level int, dn, action string, want ...int) (Attempt, error) {
	a := Attempt{Level: level, Device: dn, Action: action, ExitCode: -1, Start: f.now()}
	d := f.dev[dn]
	fail := func(err error) (Attempt, error) {
		a.Duration = f.now().Sub(a.Start)
		a.Error = err.Error()
		return a, err
	}
	params, _, err := f.prepare(ctx, d, node)
	if err != nil {
		return fail(err)
	}
	actx, cancel := context.WithTimeout(ctx, d.timeout())
	defer cancel()
	out, err := f.runner.Run(actx, d.Agent, action, params, d.Secrets...)
	a.ExitCode, a.Output, a.Duration = out.ExitCode, out.Output, out.Duration
	if err != nil {
		return fail(fmt.Errorf("device %q %s: %w", dn, action, err))
	}
	if !slices.Contains(want, out.ExitCode) {
		return fail(fmt.Errorf("device %q %s: %s (output: %s)", dn, action, describeExit(action, out.ExitCode), orNone(out.Output)))
	}
	a.OK = true
	f.log.Info("fence agent ran", "node", node, "op", "fence", "device", dn, "action", action, "exit", out.ExitCode, "duration", out.Duration)
	return a, nil
}

func describeExit(action string, code int) string {
	switch {
	case action == "status" && code == ExitSuccess:
		return "node is still on"
	case action == "status" && code == ExitOff:
		return "node is off"
	case code == ExitFailure:
		return "agent failed (exit status 1)"
	}
	return fmt.Sprintf("exit status %d", code)
}

// DeviceTest is what a test of one device for one node found.
type DeviceTest struct {
	Attempt
	// Power is "on", "off" or "unknown": the node's power as the device
	// reports it.
	Power string `json:"power"`
}

// TestResult is what Test found for a node.
type TestResult struct {
	Node    string       `json:"node"`
	Devices []DeviceTest `json:"devices"`
	// OK says every device of every level answered.
	OK bool `json:"ok"`
}

// Test checks that node can be fenced without fencing it: it checks each
// device of each of the node's levels against its agent's metadata and runs
// the status action (the device is reachable, the credentials work, the plug
// exists). It is what `haven fence test NODE` runs. A failing device is
// reported in the result; the error is non-nil when any device failed.
func (f *Fencer) Test(ctx context.Context, node string) (TestResult, error) {
	tr := TestResult{Node: node, OK: true}
	levels := f.cfg.Levels[node]
	if len(levels) == 0 {
		return TestResult{Node: node}, fmt.Errorf("test fencing of node %q: %w: add fence levels for it", node, ErrNotConfigured)
	}
	var errs []error
	for li, l := range levels {
		for _, dn := range l.Devices {
			a, err := f.run(ctx, node, li+1, dn, "status", ExitSuccess, ExitOff)
			dt := DeviceTest{Attempt: a, Power: "unknown"}
			switch {
			case err != nil:
				tr.OK = false
				errs = append(errs, fmt.Errorf("level %d: %w", li+1, err))
			case a.ExitCode == ExitOff:
				dt.Power = "off"
			default:
				dt.Power = "on"
			}
			tr.Devices = append(tr.Devices, dt)
		}
	}
	if !tr.OK {
		return tr, fmt.Errorf("test fencing of node %q: %w", node, errors.Join(errs...))
	}
	return tr, nil
}

// TestDevice runs the agent's monitor action on one device (is the device
// itself reachable, whatever node). It returns the attempt; the error is
// non-nil when the monitor failed.
func (f *Fencer) TestDevice(ctx context.Context, device string) (Attempt, error) {
	if f.dev[device] == nil {
		return Attempt{Device: device}, fmt.Errorf("test fence device %q: no such device: see `haven fence list`", device)
	}
	a, err := f.run(ctx, "", 0, device, "monitor", ExitSuccess)
	if err != nil {
		return a, fmt.Errorf("test fence device %q: %w", device, err)
	}
	return a, nil
}

// Config returns the Fencer's configuration with secrets redacted.
func (f *Fencer) Config() Config { return f.cfg.Redacted() }
