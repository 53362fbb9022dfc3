package guestdef

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"
)

// Duration is a span of time in a definition. In JSON it is a Go duration
// string ("5s", "2m") or a number of seconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the duration as a string such as "5s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts "5s" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return errors.New(`want a duration such as "5s" or a number of seconds`)
	}
	switch x := v.(type) {
	case float64:
		if x < 0 || x > float64(math.MaxInt64/int64(time.Second)) {
			return fmt.Errorf("%v seconds is out of range", x)
		}
		*d = Duration(x * float64(time.Second))
	case string:
		t, err := time.ParseDuration(x)
		if err != nil || t < 0 {
			return fmt.Errorf("%q is not a duration such as \"5s\"", x)
		}
		*d = Duration(t)
	default:
		return errors.New(`want a duration such as "5s" or a number of seconds`)
	}
	return nil
}

// Check is one health check of a guest, run by the agent of the host the
// guest runs on. Exactly one of Agent, TCP, HTTP and Exec is set. A check
// that fails Failures times in a row (after StartGrace from the guest's
// start) makes the host kill the guest and report it crashed, with the
// check and its last output as the reason: the manager then applies the
// guest's recovery policy exactly as for any crash.
type Check struct {
	// Name names the check in events; default its kind ("agent", "tcp",
	// "http", "exec") and, when several share a kind, its index.
	Name string `json:"name,omitempty"`
	// Agent pings the guest agent (qemu-guest-agent's guest-ping) over
	// the virtio-serial channel Haven adds to the guest.
	Agent bool `json:"agent,omitempty"`
	// TCP connects to this port of the guest's address.
	TCP int `json:"tcp,omitempty"`
	// HTTP gets this URL and expects Status (default 200). A host of
	// "guest" (http://guest:8080/health) stands for the guest's address.
	HTTP   string `json:"http,omitempty"`
	Status int    `json:"status,omitempty"`
	// Exec runs a command inside the guest through the guest agent
	// (guest-exec: the program, then its arguments) and expects ExitCode.
	Exec     []string `json:"exec,omitempty"`
	ExitCode int      `json:"exit_code,omitempty"`

	// Interval between checks (default 10s), Timeout of one check
	// (default 5s, at most the interval), Failures in a row that make the
	// guest failed (default 3), StartGrace after the guest starts during
	// which failures do not count (default 60s: boot time).
	Interval   Duration `json:"interval,omitempty"`
	Timeout    Duration `json:"timeout,omitempty"`
	Failures   int      `json:"failures,omitempty"`
	StartGrace Duration `json:"start_grace,omitempty"`
}

// Check defaults.
const (
	DefaultInterval   = 10 * time.Second
	DefaultTimeout    = 5 * time.Second
	DefaultFailures   = 3
	DefaultStartGrace = 60 * time.Second
	// The guest agent heartbeat of a guest that declares a guest agent
	// and has no agent check of its own.
	HeartbeatInterval = 5 * time.Second
	HeartbeatTimeout  = 3 * time.Second
	HeartbeatFailures = 3
)

// Kind is the check's kind: "agent", "tcp", "http" or "exec".
func (c Check) Kind() string {
	switch {
	case c.Agent:
		return "agent"
	case c.TCP != 0:
		return "tcp"
	case c.HTTP != "":
		return "http"
	case len(c.Exec) > 0:
		return "exec"
	}
	return ""
}

// WithDefaults returns c with every unset timing filled in.
func (c Check) WithDefaults() Check {
	if c.Interval == 0 {
		c.Interval = Duration(DefaultInterval)
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(min(DefaultTimeout, c.Interval.D()))
	}
	if c.Failures == 0 {
		c.Failures = DefaultFailures
	}
	if c.StartGrace == 0 {
		c.StartGrace = Duration(DefaultStartGrace)
	}
	if c.HTTP != "" && c.Status == 0 {
		c.Status = 200
	}
	return c
}

// NeedsAgent reports whether the guest needs the guest agent channel: it
// declares a guest agent, or a check talks to it.
func (d Definition) NeedsAgent() bool {
	if d.GuestAgent {
		return true
	}
	for _, c := range d.Health {
		if c.Agent || len(c.Exec) > 0 {
			return true
		}
	}
	return false
}

// Checks returns the checks the agent runs, defaults filled in and names
// given: the configured ones, plus the guest agent heartbeat of a guest that
// declares a guest agent and has no agent check (a hung kernel stops
// answering it).
func (d Definition) Checks() []Check {
	var out []Check
	count := map[string]int{}
	hasAgent := false
	for _, c := range d.Health {
		count[c.Kind()]++
		hasAgent = hasAgent || c.Agent
	}
	seen := map[string]int{}
	for _, c := range d.Health {
		c = c.WithDefaults()
		if c.Name == "" {
			k := c.Kind()
			c.Name = k
			if count[k] > 1 {
				c.Name = fmt.Sprintf("%s%d", k, seen[k])
			}
			seen[k]++
		}
		out = append(out, c)
	}
	if d.GuestAgent && !hasAgent {
		out = append(out, Check{Name: "heartbeat", Agent: true, Interval: Duration(HeartbeatInterval),
			Timeout: Duration(HeartbeatTimeout), Failures: HeartbeatFailures, StartGrace: Duration(DefaultStartGrace)})
	}
	return out
}

// HealthErrors returns the problems of the definition's health checks and
// address, each naming its field ("health[1].tcp").
func (d Definition) HealthErrors() []*FieldError {
	var out []*FieldError
	d.validateHealth(func(field, format string, a ...any) {
		out = append(out, &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)})
	})
	return out
}

// validateHealth adds the problems of the health checks.
func (d Definition) validateHealth(add func(field, format string, a ...any)) {
	names := map[string]bool{}
	for i, c := range d.Health {
		f := fmt.Sprintf("health[%d]", i)
		n := 0
		for _, set := range []bool{c.Agent, c.TCP != 0, c.HTTP != "", len(c.Exec) > 0} {
			if set {
				n++
			}
		}
		if n != 1 {
			add(f, "give exactly one of agent, tcp, http and exec (found %d)", n)
		}
		if c.TCP < 0 || c.TCP > 65535 {
			add(f+".tcp", "port %d is out of range 1-65535", c.TCP)
		}
		if c.HTTP != "" {
			u, err := url.Parse(c.HTTP)
			switch {
			case err != nil:
				add(f+".http", "%q is not a URL: %v", c.HTTP, err)
			case u.Scheme != "http" && u.Scheme != "https":
				add(f+".http", "%q: want an http:// or https:// URL such as http://guest:8080/health", c.HTTP)
			}
		}
		if c.Status != 0 && (c.Status < 100 || c.Status > 599) {
			add(f+".status", "%d is not an HTTP status", c.Status)
		}
		if c.Status != 0 && c.HTTP == "" {
			add(f+".status", "an expected status needs an http check")
		}
		if len(c.Exec) > 0 && strings.TrimSpace(c.Exec[0]) == "" {
			add(f+".exec", "the program to run is empty")
		}
		if c.ExitCode != 0 && len(c.Exec) == 0 {
			add(f+".exit_code", "an expected exit code needs an exec check")
		}
		if c.Interval != 0 && c.Interval.D() < 100*time.Millisecond {
			add(f+".interval", "%s is too short: at least 100ms", c.Interval.D())
		}
		if c.Failures < 0 {
			add(f+".failures", "%d is negative", c.Failures)
		}
		w := c.WithDefaults()
		if w.Timeout.D() > w.Interval.D() {
			add(f+".timeout", "%s is longer than the interval %s", w.Timeout.D(), w.Interval.D())
		}
		if c.Name != "" {
			if names[c.Name] {
				add(f+".name", "%q names two checks", c.Name)
			}
			names[c.Name] = true
		}
	}
	switch d.Display {
	case "", "vnc":
	default:
		add("display", "%q is not a display: use vnc, or leave it out for none", d.Display)
	}
	if d.Address != "" && strings.ContainsAny(d.Address, "/ ") {
		add("address", "%q is not a host name or IP address", d.Address)
	}
}
