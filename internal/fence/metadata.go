package fence

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Metadata is what a fence agent says about itself in answer to
// `action=metadata`: its parameters and the actions it supports.
type Metadata struct {
	Agent      string      // the agent's own name, such as "fence_ipmilan"
	ShortDesc  string      // one line about the agent
	Parameters []Parameter // in the agent's order
	Actions    []string    // such as "on", "off", "reboot", "status", "monitor"
}

// Parameter is one parameter an agent accepts on stdin.
type Parameter struct {
	Name       string
	Required   bool
	Deprecated bool
	// Obsoletes names the older parameter this one replaces: "password"
	// obsoletes "passwd", so either satisfies the other's requirement.
	Obsoletes string
	// Type is the content type: "string", "boolean", "integer", "second",
	// "select" (one of Options).
	Type      string
	Default   string
	Options   []string
	ShortDesc string
}

// Param returns the parameter called name.
func (m *Metadata) Param(name string) (Parameter, bool) {
	for _, p := range m.Parameters {
		if p.Name == name {
			return p, true
		}
	}
	return Parameter{}, false
}

// HasAction reports whether the agent lists the action.
func (m *Metadata) HasAction(action string) bool { return slices.Contains(m.Actions, action) }

// plugParam is the parameter name the agent takes a node's plug under: "plug"
// on current agents, "port" on old ones, "" when it takes none.
func (m *Metadata) plugParam() string {
	if _, ok := m.Param("plug"); ok {
		return "plug"
	}
	if _, ok := m.Param("port"); ok {
		return "port"
	}
	return ""
}

// aliases returns the names that stand for the same setting as name: itself,
// what it obsoletes and what obsoletes it.
func (m *Metadata) aliases(name string) []string {
	out := []string{name}
	for _, p := range m.Parameters {
		if p.Name == name && p.Obsoletes != "" {
			out = append(out, p.Obsoletes)
		}
		if p.Obsoletes == name {
			out = append(out, p.Name)
		}
	}
	return out
}

// reserved are parameters Haven sets itself on every run; a device may not.
var reserved = map[string]bool{"action": true, "nodename": true}

// Check checks params (what will be written to the agent's stdin, without
// action) against the metadata. It refuses an unknown parameter, a missing
// required one (a required parameter is satisfied by any of its aliases, as
// "ip" by "ipaddr"), and a value of the wrong type, naming the parameter.
// Warnings name deprecated parameters that still work.
func (m *Metadata) Check(params map[string]string) (warnings []string, err error) {
	var errs []error
	for _, name := range sortedKeys(params) {
		if reserved[name] {
			errs = append(errs, fmt.Errorf("parameter %q is set by Haven on every run: remove it", name))
			continue
		}
		p, ok := m.Param(name)
		if !ok {
			errs = append(errs, fmt.Errorf("agent %s has no parameter %q: remove it or fix its name (see `%s -o metadata`)", m.Agent, name, m.Agent))
			continue
		}
		if err := checkValue(p, params[name]); err != nil {
			errs = append(errs, err)
		}
		if p.Deprecated {
			w := fmt.Sprintf("parameter %q of %s is deprecated", name, m.Agent)
			for _, q := range m.Parameters {
				if q.Obsoletes == name {
					w += fmt.Sprintf(": use %q", q.Name)
					break
				}
			}
			warnings = append(warnings, w)
		}
	}
	for _, p := range m.Parameters {
		if !p.Required || reserved[p.Name] {
			continue
		}
		if !slices.ContainsFunc(m.aliases(p.Name), func(a string) bool { _, ok := params[a]; return ok }) {
			if p.Deprecated {
				continue // reported under the name that replaces it
			}
			errs = append(errs, fmt.Errorf("agent %s needs parameter %q (%s): add it", m.Agent, p.Name, p.ShortDesc))
		}
	}
	return warnings, errors.Join(errs...)
}

func checkValue(p Parameter, v string) error {
	bad := func(want string) error {
		return fmt.Errorf("parameter %q must be %s, not %q", p.Name, want, v)
	}
	switch p.Type {
	case "boolean":
		switch strings.ToLower(v) {
		case "0", "1", "true", "false", "yes", "no", "on", "off", "":
			return nil
		}
		return bad("a boolean (1 or 0)")
	case "integer":
		if _, err := strconv.Atoi(v); err != nil {
			return bad("an integer")
		}
	case "second":
		if f, err := strconv.ParseFloat(v, 64); err != nil || f < 0 {
			return bad("a number of seconds")
		}
	case "select":
		if len(p.Options) > 0 && !slices.Contains(p.Options, v) {
			return bad("one of " + strings.Join(p.Options, ", "))
		}
	}
	return nil
}

// The XML shape of resource-agent metadata, as the fence-agents library
// prints it.
type xmlAgent struct {
	XMLName    xml.Name `xml:"resource-agent"`
	Name       string   `xml:"name,attr"`
	ShortDesc  string   `xml:"shortdesc,attr"`
	Parameters []struct {
		Name       string `xml:"name,attr"`
		Required   string `xml:"required,attr"`
		Deprecated string `xml:"deprecated,attr"`
		Obsoletes  string `xml:"obsoletes,attr"`
		Content    struct {
			Type    string `xml:"type,attr"`
			Default string `xml:"default,attr"`
			Options []struct {
				Value string `xml:"value,attr"`
			} `xml:"option"`
		} `xml:"content"`
		ShortDesc []struct {
			Lang string `xml:"lang,attr"`
			Text string `xml:",chardata"`
		} `xml:"shortdesc"`
	} `xml:"parameters>parameter"`
	Actions []struct {
		Name string `xml:"name,attr"`
	} `xml:"actions>action"`
}

// ParseMetadata parses the XML an agent prints for `-o metadata`. Text the
// agent prints before the XML declaration or root element (some print
// warnings on stdout) is skipped.
func ParseMetadata(data []byte) (*Metadata, error) {
	start := bytes.Index(data, []byte("<?xml"))
	if start < 0 {
		start = bytes.Index(data, []byte("<resource-agent"))
	}
	if start < 0 {
		return nil, errors.New("parse fence agent metadata: no <resource-agent> element")
	}
	var x xmlAgent
	dec := xml.NewDecoder(bytes.NewReader(data[start:]))
	dec.Strict = true
	if err := dec.Decode(&x); err != nil {
		return nil, fmt.Errorf("parse fence agent metadata: %w", err)
	}
	m := &Metadata{Agent: x.Name, ShortDesc: x.ShortDesc}
	seen := map[string]bool{}
	for i, xp := range x.Parameters {
		name := strings.TrimSpace(xp.Name)
		if !validParamName(name) {
			return nil, fmt.Errorf("parse fence agent metadata of %q: parameter %d has a bad name %q", x.Name, i+1, xp.Name)
		}
		if seen[name] {
			return nil, fmt.Errorf("parse fence agent metadata of %q: parameter %q listed twice", x.Name, name)
		}
		seen[name] = true
		p := Parameter{
			Name:       name,
			Required:   xp.Required == "1",
			Deprecated: xp.Deprecated == "1",
			Obsoletes:  strings.TrimSpace(xp.Obsoletes),
			Type:       xp.Content.Type,
			Default:    xp.Content.Default,
		}
		if p.Type == "" {
			p.Type = "string"
		}
		for _, o := range xp.Content.Options {
			p.Options = append(p.Options, o.Value)
		}
		for _, d := range xp.ShortDesc {
			if d.Lang == "" || d.Lang == "en" {
				p.ShortDesc = strings.TrimSpace(d.Text)
				break
			}
		}
		m.Parameters = append(m.Parameters, p)
	}
	for _, a := range x.Actions {
		if a.Name != "" && !slices.Contains(m.Actions, a.Name) {
			m.Actions = append(m.Actions, a.Name)
		}
	}
	return m, nil
}

// validParamName reports whether name can be written as a key on an agent's
// stdin: letters, digits, '_' and '-' ("redfish-uri" is a real one).
func validParamName(name string) bool {
	if name == "" || len(name) > 128 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// MetadataCache runs `action=metadata` once per agent executable and keeps
// the answer. It is safe for concurrent use.
type MetadataCache struct {
	runner *Runner

	mu sync.Mutex
	m  map[string]*Metadata // by resolved agent path; guarded by mu
}

// NewMetadataCache returns a cache that asks agents through runner.
func NewMetadataCache(runner *Runner) *MetadataCache {
	return &MetadataCache{runner: runner, m: map[string]*Metadata{}}
}

// Get returns the metadata of agent (a fence_* name or an absolute path),
// running the agent the first time.
func (c *MetadataCache) Get(ctx context.Context, agent string) (*Metadata, error) {
	path, err := c.runner.Resolve(agent)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	md := c.m[path]
	c.mu.Unlock()
	if md != nil {
		return md, nil
	}
	out, err := c.runner.Run(ctx, path, "metadata", nil)
	if err != nil {
		return nil, fmt.Errorf("read metadata of fence agent %q: %w", agent, err)
	}
	if out.ExitCode != 0 {
		return nil, fmt.Errorf("read metadata of fence agent %q: exit status %d: %s", agent, out.ExitCode, out.Output)
	}
	md, err = ParseMetadata(out.Stdout)
	if err != nil {
		return nil, fmt.Errorf("read metadata of fence agent %q: %w", agent, err)
	}
	if md.Agent == "" {
		md.Agent = agent
	}
	c.mu.Lock()
	c.m[path] = md
	c.mu.Unlock()
	return md, nil
}
